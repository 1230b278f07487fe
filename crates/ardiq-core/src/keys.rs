//! Key names of one queue, exactly as PROTOCOL.md lays them out.
//!
//! Every key starts with `ardiq:{<queue>}:`; the braces are a Redis Cluster hash tag, so
//! all keys of a queue live in one slot and every script call touches one slot.

/// The consumer group every worker joins on every lane's stream.
pub const GROUP: &str = "ardiq";

/// Key names for one queue and its lanes.
#[derive(Debug, Clone)]
pub struct Keys {
    prefix: String,
    /// Lane names, lowest first (the configuration order).
    lanes: Vec<String>,
    /// Stream keys, same order as `lanes`.
    streams: Vec<String>,
}

impl Keys {
    /// Keys of `queue` with `lanes` given lowest first.
    pub fn new(queue: &str, lanes: &[String]) -> Self {
        let prefix = format!("ardiq:{{{queue}}}:");
        let streams = lanes
            .iter()
            .map(|l| format!("{prefix}stream:{l}"))
            .collect();
        Keys {
            prefix,
            lanes: lanes.to_vec(),
            streams,
        }
    }

    /// `ardiq:{<queue>}:`, passed to the scripts that publish on `P done` / `P abort`.
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// The queue name (what the braces of the prefix hold); seals bind payloads to it.
    pub fn queue(&self) -> &str {
        &self.prefix["ardiq:{".len()..self.prefix.len() - "}:".len()]
    }

    /// Lane names, lowest first.
    pub fn lanes(&self) -> &[String] {
        &self.lanes
    }

    /// Position of `lane` in the lowest-first list.
    pub fn lane_index(&self, lane: &str) -> Option<usize> {
        self.lanes.iter().position(|l| l == lane)
    }

    /// The stream of the lane at `index` (lowest-first numbering).
    pub fn stream(&self, index: usize) -> &str {
        &self.streams[index]
    }

    /// Lane indexes from the highest priority down: the order workers read in.
    pub fn read_order(&self) -> impl Iterator<Item = usize> + '_ {
        (0..self.lanes.len()).rev()
    }

    /// `P job:<id>`
    pub fn job(&self, id: &str) -> String {
        format!("{}job:{id}", self.prefix)
    }

    /// `P result:<id>`
    pub fn result(&self, id: &str) -> String {
        format!("{}result:{id}", self.prefix)
    }

    /// `P progress:<id>`
    pub fn progress(&self, id: &str) -> String {
        format!("{}progress:{id}", self.prefix)
    }

    /// `P wait:<id>`
    pub fn wait(&self, id: &str) -> String {
        format!("{}wait:{id}", self.prefix)
    }

    /// `P dead` (the dead-letter index)
    pub fn dead_index(&self) -> String {
        format!("{}dead", self.prefix)
    }

    /// `P dead:<id>`
    pub fn dead(&self, id: &str) -> String {
        format!("{}dead:{id}", self.prefix)
    }

    /// `P attempts:<id>` (the task's failed attempts, PROTOCOL.md History)
    pub fn attempts(&self, id: &str) -> String {
        format!("{}attempts:{id}", self.prefix)
    }

    /// `P history` (the stream of completed tasks)
    pub fn history(&self) -> String {
        format!("{}history", self.prefix)
    }

    /// `P stats` (throughput counters per kind and minute)
    pub fn stats(&self) -> String {
        format!("{}stats", self.prefix)
    }

    /// `P delayed`
    pub fn delayed(&self) -> String {
        format!("{}delayed", self.prefix)
    }

    /// `P parked`: tasks parked by a rate limit or concurrency cap (PROTOCOL.md, Limits).
    pub fn parked(&self) -> String {
        format!("{}parked", self.prefix)
    }

    /// `P limit:<task>[:<limit key>]`: a task's rate-limit and concurrency-cap state.
    pub fn limit(&self, task: &str, limit_key: Option<&str>) -> String {
        match limit_key {
            Some(k) => format!("{}limit:{task}:{k}", self.prefix),
            None => format!("{}limit:{task}", self.prefix),
        }
    }

    /// `P crons`
    pub fn crons(&self) -> String {
        format!("{}crons", self.prefix)
    }

    /// `P crons:paused`: paused crons, name -> when it was paused (epoch ms).
    pub fn crons_paused(&self) -> String {
        format!("{}crons:paused", self.prefix)
    }

    /// `P workers`
    pub fn workers(&self) -> String {
        format!("{}workers", self.prefix)
    }

    /// `P paused` (paused lanes, `*` for the whole queue)
    pub fn paused(&self) -> String {
        format!("{}paused", self.prefix)
    }

    /// The pub/sub channel `P abort`.
    pub fn abort_channel(&self) -> String {
        format!("{}abort", self.prefix)
    }

    /// The pub/sub channel `P done`.
    pub fn done_channel(&self) -> String {
        format!("{}done", self.prefix)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_follow_the_protocol() {
        let k = Keys::new("emails", &["low".into(), "high".into()]);
        assert_eq!(k.prefix(), "ardiq:{emails}:");
        assert_eq!(k.stream(0), "ardiq:{emails}:stream:low");
        assert_eq!(k.stream(1), "ardiq:{emails}:stream:high");
        assert_eq!(k.job("a1"), "ardiq:{emails}:job:a1");
        assert_eq!(k.result("a1"), "ardiq:{emails}:result:a1");
        assert_eq!(k.wait("a1"), "ardiq:{emails}:wait:a1");
        assert_eq!(k.dead_index(), "ardiq:{emails}:dead");
        assert_eq!(k.dead("a1"), "ardiq:{emails}:dead:a1");
        assert_eq!(k.delayed(), "ardiq:{emails}:delayed");
        assert_eq!(k.attempts("a1"), "ardiq:{emails}:attempts:a1");
        assert_eq!(k.history(), "ardiq:{emails}:history");
        assert_eq!(k.stats(), "ardiq:{emails}:stats");
        assert_eq!(k.crons(), "ardiq:{emails}:crons");
        assert_eq!(k.crons_paused(), "ardiq:{emails}:crons:paused");
        assert_eq!(k.workers(), "ardiq:{emails}:workers");
        assert_eq!(k.paused(), "ardiq:{emails}:paused");
        assert_eq!(k.abort_channel(), "ardiq:{emails}:abort");
        assert_eq!(k.done_channel(), "ardiq:{emails}:done");
        assert_eq!(k.read_order().collect::<Vec<_>>(), vec![1, 0]);
        assert_eq!(k.lane_index("high"), Some(1));
        assert_eq!(k.lane_index("nope"), None);
    }
}
