//! Turning stream entries (as XREADGROUP, `fetch` and XAUTOCLAIM return them) into
//! deliveries, without trusting their contents.

use redis::Value;

use crate::executor::Delivery;
use crate::reply;

/// Why an entry without `id`, `fn` or `p` cannot run; stored as the dead letter's error.
pub const MALFORMED_REASON: &str = "malformed entry (needs id, fn and p)";

/// One entry read from a lane's stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Parsed {
    /// A runnable task.
    Task(Delivery),
    /// An entry missing `id`, `fn` or `p`: finished as a failure under `entry:<entry id>`.
    Malformed {
        /// The stream entry id.
        entry_id: String,
        /// The lane it was read from.
        lane: String,
        /// `t` if readable, else 0.
        tries: u32,
        /// `enq` if readable, else 0.
        enqueued_ms: i64,
    },
}

#[cfg(test)]
impl Parsed {
    /// The stream entry id.
    pub fn entry_id(&self) -> &str {
        match self {
            Parsed::Task(d) => &d.entry_id,
            Parsed::Malformed { entry_id, .. } => entry_id,
        }
    }
}

/// The task id under which a malformed entry is finished and dead-lettered.
pub fn malformed_task_id(entry_id: &str) -> String {
    format!("entry:{entry_id}")
}

/// Parses one entry's fields (flat array or map). Unreadable numbers read as 0: a bad
/// `t` or `enq` should not cost the task its run.
pub fn parse_fields(entry_id: String, lane: &str, fields: &Value) -> Parsed {
    let mut id = None;
    let mut fn_name = None;
    let mut payload = None;
    let (mut tries, mut enq, mut expire, mut reclaims) = (0i64, 0i64, 0i64, 0i64);
    for (k, v) in reply::pairs(fields).unwrap_or_default() {
        match reply::bytes(k) {
            Some(b"id") => id = reply::string(v),
            Some(b"fn") => fn_name = reply::string(v),
            Some(b"p") => payload = reply::bytes(v).map(<[u8]>::to_vec),
            Some(b"t") => tries = reply::int(v).unwrap_or(0),
            Some(b"enq") => enq = reply::int(v).unwrap_or(0),
            Some(b"x") => expire = reply::int(v).unwrap_or(0),
            Some(b"r") => reclaims = reply::int(v).unwrap_or(0),
            _ => {}
        }
    }
    let clamp = |n: i64| u32::try_from(n.max(0)).unwrap_or(u32::MAX);
    match (id, fn_name, payload) {
        (Some(task_id), Some(fn_name), Some(payload)) if !task_id.is_empty() => {
            Parsed::Task(Delivery {
                entry_id,
                lane: lane.to_owned(),
                task_id,
                fn_name,
                payload,
                tries: clamp(tries),
                enqueued_ms: enq,
                expire_ms: expire,
                reclaims: clamp(reclaims),
            })
        }
        _ => Parsed::Malformed {
            entry_id,
            lane: lane.to_owned(),
            tries: clamp(tries),
            enqueued_ms: enq,
        },
    }
}

/// Parses `[entry id, fields]` as it appears in stream replies. `None` for a deleted
/// entry (XAUTOCLAIM may report `nil` fields) or an unreadable shape.
pub fn parse_entry(lane: &str, entry: &Value) -> Option<Parsed> {
    let parts = reply::array(entry)?;
    let eid = reply::string(parts.first()?)?;
    let fields = parts.get(1)?;
    if matches!(fields, Value::Nil) {
        return None;
    }
    Some(parse_fields(eid, lane, fields))
}

/// Is the task expired at `now_ms`? (`x` > 0 and past.)
pub fn is_expired(d: &Delivery, now_ms: i64) -> bool {
    d.expire_ms > 0 && now_ms > d.expire_ms
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bs(s: &str) -> Value {
        Value::BulkString(s.as_bytes().to_vec())
    }

    fn fields(kv: &[(&str, &str)]) -> Value {
        Value::Array(kv.iter().flat_map(|(k, v)| [bs(k), bs(v)]).collect())
    }

    #[test]
    fn parses_a_full_entry() {
        let f = fields(&[
            ("id", "t1"),
            ("fn", "send"),
            ("p", "\u{1}\u{2}"),
            ("t", "2"),
            ("enq", "1700000000000"),
            ("x", "0"),
            ("r", "1"),
        ]);
        let Parsed::Task(d) = parse_fields("1-1".into(), "high", &f) else {
            panic!("should parse");
        };
        assert_eq!(d.task_id, "t1");
        assert_eq!(d.fn_name, "send");
        assert_eq!(d.payload, vec![1, 2]);
        assert_eq!((d.tries, d.reclaims, d.attempt()), (2, 1, 3));
        assert_eq!(d.enqueued_ms, 1_700_000_000_000);
        assert_eq!(d.lane, "high");
        assert!(!is_expired(&d, i64::MAX));
    }

    #[test]
    fn missing_fields_are_malformed() {
        for missing in ["id", "fn", "p"] {
            let all = [("id", "t1"), ("fn", "f"), ("p", "x"), ("t", "1")];
            let kv: Vec<_> = all.iter().copied().filter(|(k, _)| *k != missing).collect();
            let parsed = parse_fields("5-0".into(), "default", &fields(&kv));
            assert!(
                matches!(parsed, Parsed::Malformed { ref entry_id, tries: 1, .. } if entry_id == "5-0"),
                "{missing}: {parsed:?}"
            );
        }
        // Garbage shapes and numbers never panic.
        assert!(matches!(
            parse_fields("1-0".into(), "l", &Value::Int(3)),
            Parsed::Malformed { .. }
        ));
        let odd = fields(&[
            ("id", "a"),
            ("fn", "f"),
            ("p", ""),
            ("t", "-4"),
            ("enq", "soon"),
        ]);
        let Parsed::Task(d) = parse_fields("1-0".into(), "l", &odd) else {
            panic!()
        };
        assert_eq!((d.tries, d.enqueued_ms), (0, 0));
        assert_eq!(malformed_task_id("1-0"), "entry:1-0");
    }

    #[test]
    fn entries_and_expiry() {
        let e = Value::Array(vec![
            bs("9-9"),
            fields(&[("id", "a"), ("fn", "f"), ("p", "")]),
        ]);
        assert_eq!(parse_entry("l", &e).unwrap().entry_id(), "9-9");
        assert!(parse_entry("l", &Value::Array(vec![bs("9-9"), Value::Nil])).is_none());
        let Some(Parsed::Task(mut d)) = parse_entry("l", &e) else {
            panic!()
        };
        d.expire_ms = 100;
        assert!(!is_expired(&d, 100));
        assert!(is_expired(&d, 101));
    }
}
