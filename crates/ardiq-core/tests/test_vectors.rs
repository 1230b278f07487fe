//! The shared test vectors (`tests/vectors/*.json`, written by
//! `tests/vectors/generate.py`): the engine must give the answers the Python side gives
//! (`tests/test_vectors.py` reads the same files).

use std::path::PathBuf;

use ardiq_core::entry::{parse_fields, Parsed};
use ardiq_core::retry::retry_delay_ms;
use ardiq_core::{CronSchedule, CronSpec, Keys};
use redis::Value;
use serde_json::Value as Json;

fn load(name: &str) -> Vec<Json> {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../tests/vectors")
        .join(name);
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
    match serde_json::from_str(&text).expect("valid JSON") {
        Json::Array(cases) => cases,
        other => panic!("{name}: expected an array, got {other}"),
    }
}

fn str_of<'a>(case: &'a Json, key: &str) -> &'a str {
    case[key]
        .as_str()
        .unwrap_or_else(|| panic!("{key} in {case}"))
}

fn int_of(case: &Json, key: &str) -> i64 {
    case[key]
        .as_i64()
        .unwrap_or_else(|| panic!("{key} in {case}"))
}

#[test]
fn cron() {
    let cases = load("cron.json");
    assert!(cases.len() >= 100, "plenty of cron vectors");
    let mut failures = Vec::new();
    for case in &cases {
        let spec = str_of(case, "spec");
        let parsed = CronSpec::parse(spec);
        if let Some(word) = case["error"].as_str() {
            match parsed {
                Err(e) if e.to_string().contains(word) => {}
                other => failures.push(format!("{spec:?}: want error `{word}`, got {other:?}")),
            }
            continue;
        }
        let after = int_of(case, "after_ms");
        let want = case["next_ms"].as_i64();
        match parsed {
            Ok(s) if s.next_after(after) == want => {}
            Ok(s) => failures.push(format!(
                "{spec:?} after {after}: want {want:?}, got {:?}",
                s.next_after(after)
            )),
            Err(e) => failures.push(format!("{spec:?}: refused ({e})")),
        }
    }
    assert!(
        failures.is_empty(),
        "{} failed:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

#[test]
fn backoff() {
    for case in load("backoff.json") {
        let tries = u32::try_from(int_of(&case, "tries")).expect("tries");
        let requested = case["retry_delay_ms"].as_i64();
        let backoff = u64::try_from(int_of(&case, "backoff_ms")).expect("backoff_ms");
        let want = u64::try_from(int_of(&case, "delay_ms")).expect("delay_ms");
        assert_eq!(retry_delay_ms(tries, requested, backoff), want, "{case}");
    }
}

#[test]
fn keys() {
    for case in load("keys.json") {
        let lane = str_of(&case, "lane").to_owned();
        let k = Keys::new(str_of(&case, "queue"), std::slice::from_ref(&lane));
        let id = str_of(&case, "id");
        let want = &case["keys"];
        let got = [
            ("prefix", k.prefix().to_owned()),
            ("stream", k.stream(0).to_owned()),
            ("job", k.job(id)),
            ("result", k.result(id)),
            ("wait", k.wait(id)),
            ("dead", k.dead(id)),
            ("dead_index", k.dead_index()),
            ("delayed", k.delayed()),
            ("crons", k.crons()),
            ("workers", k.workers()),
            ("abort_channel", k.abort_channel()),
            ("done_channel", k.done_channel()),
        ];
        assert_eq!(want.as_object().map(|o| o.len()), Some(got.len()), "{case}");
        for (name, value) in got {
            assert_eq!(
                want[name].as_str(),
                Some(value.as_str()),
                "{name} of {case}"
            );
        }
    }
}

fn field_value(v: &Json) -> Vec<u8> {
    match v {
        Json::String(s) => s.as_bytes().to_vec(),
        Json::Object(o) => {
            let hex = o["hex"].as_str().expect("hex");
            (0..hex.len())
                .step_by(2)
                .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).expect("hex digit"))
                .collect()
        }
        other => panic!("field value {other}"),
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[test]
fn entries() {
    for case in load("entries.json") {
        let flat: Vec<Value> = case["fields"]
            .as_array()
            .expect("fields")
            .iter()
            .flat_map(|kv| {
                let key = kv[0].as_str().expect("field name").as_bytes().to_vec();
                [
                    Value::BulkString(key),
                    Value::BulkString(field_value(&kv[1])),
                ]
            })
            .collect();
        let lane = str_of(&case, "lane");
        let eid = str_of(&case, "entry_id");
        let parsed = parse_fields(eid.to_owned(), lane, &Value::Array(flat));
        let expect = &case["expect"];
        if expect.as_str() == Some("malformed") {
            // The same reason from both workers.
            let reason = str_of(&case, "reason");
            assert!(
                matches!(parsed, Parsed::Malformed { reason: r, .. } if r == reason),
                "{case}: {parsed:?}"
            );
            continue;
        }
        let Parsed::Task(d) = parsed else {
            panic!("{case}: {parsed:?}");
        };
        assert_eq!(
            (d.entry_id.as_str(), d.lane.as_str()),
            (eid, lane),
            "{case}"
        );
        assert_eq!(d.task_id, str_of(expect, "task_id"), "{case}");
        assert_eq!(d.fn_name, str_of(expect, "fn"), "{case}");
        assert_eq!(hex(&d.payload), str_of(expect, "payload_hex"), "{case}");
        assert_eq!(i64::from(d.tries), int_of(expect, "tries"), "{case}");
        assert_eq!(d.enqueued_ms, int_of(expect, "enqueued_ms"), "{case}");
        assert_eq!(d.expire_ms, int_of(expect, "expire_ms"), "{case}");
        assert_eq!(i64::from(d.reclaims), int_of(expect, "reclaims"), "{case}");
    }
}
