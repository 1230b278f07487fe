//! Finding queues and lanes in a database (`SCAN`), for tools given no app.

use std::collections::HashSet;

use super::{Client, OpsError};

impl Client {
    /// Every queue that has keys in this database, sorted (a `SCAN`, for tools).
    pub async fn discover_queues(&mut self) -> Result<Vec<String>, OpsError> {
        let keys = self.scan("ardiq:{*}:*").await?;
        let mut queues: Vec<String> = keys
            .iter()
            .filter_map(|k| queue_of_key(k).map(str::to_owned))
            .collect::<HashSet<_>>()
            .into_iter()
            .collect();
        queues.sort();
        Ok(queues)
    }

    /// The lanes of `queue` that have a stream, sorted by name (a `SCAN`). The app's own
    /// order (its `priorities`) is unknown to Redis; pass `--lanes` or the app for it.
    pub async fn discover_lanes(&mut self, queue: &str) -> Result<Vec<String>, OpsError> {
        let prefix = format!("ardiq:{{{queue}}}:stream:");
        let keys = self.scan(&format!("{}*", glob_escape(&prefix))).await?;
        let mut lanes: Vec<String> = keys
            .into_iter()
            .filter_map(|k| k.strip_prefix(&prefix).map(str::to_owned))
            .collect();
        lanes.sort();
        lanes.dedup();
        Ok(lanes)
    }

    async fn scan(&mut self, pattern: &str) -> Result<Vec<String>, OpsError> {
        let mut cursor: u64 = 0;
        let mut out = Vec::new();
        loop {
            let (next, keys): (u64, Vec<String>) = self
                .query(
                    redis::cmd("SCAN")
                        .arg(cursor)
                        .arg("MATCH")
                        .arg(pattern)
                        .arg("COUNT")
                        .arg(1000),
                )
                .await?;
            out.extend(keys);
            if next == 0 {
                return Ok(out);
            }
            cursor = next;
        }
    }
}

/// `ardiq:{q}:...` → `q`.
fn queue_of_key(key: &str) -> Option<&str> {
    let rest = key.strip_prefix("ardiq:{")?;
    let end = rest.find("}:")?;
    Some(&rest[..end])
}

pub(super) fn queue_of_prefix(prefix: &str) -> &str {
    queue_of_key(prefix).unwrap_or(prefix)
}

/// Escapes the glob characters of `SCAN MATCH`.
fn glob_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        if matches!(c, '*' | '?' | '[' | ']' | '\\') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_queue_names() {
        assert_eq!(queue_of_key("ardiq:{emails}:stream:low"), Some("emails"));
        assert_eq!(queue_of_key("ardiq:{a}b}:dead"), Some("a}b"));
        assert_eq!(queue_of_key("other:{x}:y"), None);
        assert_eq!(queue_of_prefix("ardiq:{q}:"), "q");
        assert_eq!(glob_escape("ardiq:{a*b}:"), "ardiq:{a\\*b}:");
    }
}
