//! Turning stream entries (as XREADGROUP, `fetch` and XAUTOCLAIM return them) into
//! deliveries, without trusting their contents.

use redis::Value;

use crate::executor::Delivery;
use crate::reply;

/// Why an entry without `id`, `fn` or `p` cannot run; stored as the dead letter's error.
pub const MALFORMED_REASON: &str = "malformed entry (needs id, fn and p)";
/// Why an entry whose `id` is not UTF-8 cannot run (the in-code worker says the same).
pub const BAD_ID_REASON: &str = "malformed entry (id is not UTF-8)";
/// Why an entry whose `fn` is not UTF-8 cannot run.
pub const BAD_FN_REASON: &str = "malformed entry (fn is not UTF-8)";

/// One entry read from a lane's stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Parsed {
    /// A runnable task.
    Task(Delivery),
    /// An entry missing `id`, `fn` or `p`, or whose `id` or `fn` is not UTF-8: finished
    /// as a failure under `entry:<entry id>`.
    Malformed {
        /// The dead letter's error: one of the `*_REASON` constants.
        reason: &'static str,
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
    let mut limit_key = None;
    let mut holds_token = false;
    for (k, v) in reply::pairs(fields).unwrap_or_default() {
        match reply::bytes(k) {
            // Never a lossy conversion: a task must not run (nor its result be stored)
            // under an id or a name other than the one written.
            Some(b"id") => id = Some(exact_string(v)),
            Some(b"fn") => fn_name = Some(exact_string(v)),
            Some(b"p") => payload = reply::bytes(v).map(<[u8]>::to_vec),
            Some(b"t") => tries = reply::int(v).unwrap_or(0),
            Some(b"enq") => enq = reply::int(v).unwrap_or(0),
            Some(b"x") => expire = reply::int(v).unwrap_or(0),
            Some(b"r") => reclaims = reply::int(v).unwrap_or(0),
            // A limit key that is not UTF-8 keys no limit of ours: the task-wide one.
            Some(b"lk") => limit_key = exact_string(v).filter(|k| !k.is_empty()),
            Some(b"ad") => holds_token = reply::bytes(v) == Some(b"1"),
            _ => {}
        }
    }
    let clamp = |n: i64| u32::try_from(n.max(0)).unwrap_or(u32::MAX);
    let malformed = |reason| Parsed::Malformed {
        reason,
        entry_id: entry_id.clone(),
        lane: lane.to_owned(),
        tries: clamp(tries),
        enqueued_ms: enq,
    };
    match (id, fn_name, payload) {
        (Some(Some(task_id)), Some(Some(fn_name)), Some(payload)) if !task_id.is_empty() => {
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
                live_job: None,
                limit_key,
                holds_token,
            })
        }
        (Some(None), Some(_), Some(_)) => malformed(BAD_ID_REASON),
        (Some(Some(id)), Some(None), Some(_)) if !id.is_empty() => malformed(BAD_FN_REASON),
        _ => malformed(MALFORMED_REASON),
    }
}

/// The field as text: `None` when it is not valid UTF-8 (or not a string at all).
fn exact_string(v: &Value) -> Option<String> {
    match v {
        Value::Int(i) => Some(i.to_string()),
        other => reply::bytes(other).and_then(|b| String::from_utf8(b.to_vec()).ok()),
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
    fn reads_the_limit_fields() {
        let base = [("id", "t1"), ("fn", "send"), ("p", "")];
        let Parsed::Task(d) = parse_fields("1-1".into(), "high", &fields(&base)) else {
            panic!("should parse");
        };
        assert_eq!((d.limit_key, d.holds_token), (None, false));
        let f = fields(&[base[0], base[1], base[2], ("lk", "acme"), ("ad", "1")]);
        let Parsed::Task(d) = parse_fields("1-1".into(), "high", &f) else {
            panic!("should parse");
        };
        assert_eq!(
            (d.limit_key.as_deref(), d.holds_token),
            (Some("acme"), true)
        );
        let f = fields(&[base[0], base[1], base[2], ("lk", ""), ("ad", "0")]);
        let Parsed::Task(d) = parse_fields("1-1".into(), "high", &f) else {
            panic!("should parse");
        };
        assert_eq!((d.limit_key, d.holds_token), (None, false));
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
    fn non_utf8_id_or_name_is_malformed_never_lossy() {
        let raw = |k: &str, v: &[u8]| [bs(k), Value::BulkString(v.to_vec())];
        let entry = |id: &[u8], name: &[u8]| {
            Value::Array(
                [raw("id", id), raw("fn", name), raw("p", b"x")]
                    .into_iter()
                    .flatten()
                    .collect(),
            )
        };
        let reason = |p: Parsed| match p {
            Parsed::Malformed { reason, .. } => reason,
            Parsed::Task(d) => panic!("ran as {d:?}"),
        };
        let bad_id = parse_fields("1-0".into(), "l", &entry(b"job-\xff", b"add"));
        assert_eq!(reason(bad_id), BAD_ID_REASON);
        let bad_fn = parse_fields("1-0".into(), "l", &entry(b"job", b"ad\xc3d"));
        assert_eq!(reason(bad_fn), BAD_FN_REASON);
        // Missing fields come first, as in the in-code worker.
        let no_fn = Value::Array(
            raw("id", b"\xff")
                .into_iter()
                .chain(raw("p", b"x"))
                .collect(),
        );
        assert_eq!(
            reason(parse_fields("1-0".into(), "l", &no_fn)),
            MALFORMED_REASON
        );
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

/// Fuzzing the decoding of entries: any reply shape, any field names and values, any
/// bytes. Nothing may panic; an entry that parses as a task carries exactly the fields
/// it was given. The number of inputs tried is printed (`cargo test -- --nocapture`).
#[cfg(test)]
mod fuzz {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use proptest::prelude::*;

    use super::*;

    static TRIED: AtomicUsize = AtomicUsize::new(0);
    /// Cases per property: 4000 by default (`make test`), ARDIQ_FUZZ_CASES for more.
    fn cases() -> u32 {
        std::env::var("ARDIQ_FUZZ_CASES")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(4000)
    }

    /// Any reply value, a few levels deep.
    fn value() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            Just(Value::Nil),
            any::<i64>().prop_map(Value::Int),
            proptest::collection::vec(any::<u8>(), 0..24).prop_map(Value::BulkString),
            "[a-z0-9 -]{0,12}".prop_map(Value::SimpleString),
            Just(Value::Okay),
            any::<bool>().prop_map(Value::Boolean),
            any::<f64>().prop_map(Value::Double),
        ];
        leaf.prop_recursive(3, 32, 6, |inner| {
            prop_oneof![
                proptest::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
                proptest::collection::vec((inner.clone(), inner), 0..4).prop_map(Value::Map),
            ]
        })
    }

    /// Field names an entry may carry (the real ones and junk), with any values.
    fn fields() -> impl Strategy<Value = Vec<(Vec<u8>, Value)>> {
        let name = prop_oneof![
            Just(b"id".to_vec()),
            Just(b"fn".to_vec()),
            Just(b"p".to_vec()),
            Just(b"t".to_vec()),
            Just(b"enq".to_vec()),
            Just(b"x".to_vec()),
            Just(b"r".to_vec()),
            proptest::collection::vec(any::<u8>(), 0..6),
        ];
        proptest::collection::vec((name, value()), 0..10)
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: cases(), ..ProptestConfig::default() })]

        #[test]
        fn any_entry_shape_parses_without_panicking(entry in value(), lane in "[a-z]{0,6}") {
            TRIED.fetch_add(1, Ordering::Relaxed);
            let _ = parse_entry(&lane, &entry);
            let _ = parse_fields("1-0".to_owned(), &lane, &entry);
        }

        #[test]
        fn any_fields_parse_to_a_task_or_malformed(kv in fields()) {
            TRIED.fetch_add(1, Ordering::Relaxed);
            let flat = Value::Array(
                kv.iter().flat_map(|(k, v)| [Value::BulkString(k.clone()), v.clone()]).collect(),
            );
            let parsed = parse_fields("7-0".to_owned(), "l", &flat);
            let has = |n: &[u8]| kv.iter().any(|(k, _)| k == n);
            if let Parsed::Task(d) = &parsed {
                prop_assert!(has(b"id") && has(b"fn") && has(b"p"));
                prop_assert!(!d.task_id.is_empty());
                prop_assert_eq!(&d.entry_id, "7-0");
            } else {
                let malformed_here = matches!(parsed, Parsed::Malformed { ref entry_id, .. } if entry_id == "7-0");
                prop_assert!(malformed_here);
            }
            // The same entry as a stream reply item.
            let item = Value::Array(vec![Value::BulkString(b"7-0".to_vec()), flat]);
            prop_assert_eq!(parse_entry("l", &item), Some(parsed));
        }

        #[test]
        fn well_formed_entries_round_trip(
            id in "[ -~]{1,20}",
            name in "[a-z_.]{1,12}",
            payload in proptest::collection::vec(any::<u8>(), 0..64),
            t in any::<u32>(), r in any::<u32>(), enq in any::<i64>(),
        ) {
            TRIED.fetch_add(1, Ordering::Relaxed);
            let b = |s: &[u8]| Value::BulkString(s.to_vec());
            let flat = Value::Array(vec![
                b(b"id"), b(id.as_bytes()), b(b"fn"), b(name.as_bytes()), b(b"p"), b(&payload),
                b(b"t"), b(t.to_string().as_bytes()), b(b"r"), b(r.to_string().as_bytes()),
                b(b"enq"), b(enq.to_string().as_bytes()),
            ]);
            let Parsed::Task(d) = parse_fields("1-1".to_owned(), "l", &flat) else {
                return Err(TestCaseError::fail("a well-formed entry did not parse"));
            };
            prop_assert_eq!((d.task_id, d.fn_name, d.payload), (id, name, payload));
            prop_assert_eq!((d.tries, d.reclaims, d.enqueued_ms), (t, r, enq));
        }
    }

    #[test]
    fn zz_report_inputs_tried() {
        // Runs last in name order when single-threaded; informative only.
        println!(
            "entry fuzz: {} inputs tried so far, 0 panics",
            TRIED.load(Ordering::Relaxed)
        );
    }
}
