//! A task's arguments as JSON, decoded from its payload in Rust (rmpv), never through the
//! app's deserializer: the dashboard runs no app code on data from Redis.
//!
//! The default serializer writes `[args, kwargs, headers]` as msgpack. A payload that is
//! anything else says so instead: `sealed` (signed: PROTOCOL.md, Signed payloads; the
//! arguments sit inside the seal) or `unknown` (another serializer, such as pickle).
//! msgpack values without a JSON twin are spelled out: bytes as `{"$bin": "<hex>"}`,
//! extensions as `{"$ext": type, "hex": "<hex>"}`, non-finite floats as strings, map keys
//! that are not strings as their JSON text.

use rmpv::Value as Mp;
use serde_json::{json, Map, Value};

/// Nesting deeper than this is refused (the decoder recurses).
const MAX_DEPTH: usize = 64;

/// The `args` member of a job answer for `payload`.
pub fn describe(payload: &[u8]) -> Value {
    if ardiq_core::sign::is_sealed(payload) {
        return json!({
            "format": "sealed",
            "note": "the payload is signed (sealed); its arguments are not shown",
        });
    }
    match decode(payload) {
        Some((args, kwargs, headers)) => json!({
            "format": "msgpack",
            "args": args,
            "kwargs": kwargs,
            "headers": headers,
        }),
        None => json!({
            "format": "unknown",
            "note": "the payload is not plain msgpack [args, kwargs, headers] (another serializer?)",
            "bytes": payload.len(),
        }),
    }
}

/// `[args, kwargs, headers]` when the whole payload is exactly that, as msgpack.
fn decode(payload: &[u8]) -> Option<(Value, Value, Value)> {
    let mut rest = payload;
    let value = rmpv::decode::read_value_with_max_depth(&mut rest, MAX_DEPTH).ok()?;
    if !rest.is_empty() {
        return None; // trailing bytes: not one msgpack value
    }
    let Mp::Array(parts) = value else {
        return None;
    };
    let [args, kwargs, headers] = <[Mp; 3]>::try_from(parts).ok()?;
    if !matches!(args, Mp::Array(_)) || !matches!(kwargs, Mp::Map(_)) {
        return None;
    }
    if !matches!(headers, Mp::Map(_) | Mp::Nil) {
        return None;
    }
    Some((to_json(&args), to_json(&kwargs), to_json(&headers)))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn float(f: f64) -> Value {
    serde_json::Number::from_f64(f).map_or_else(|| Value::String(f.to_string()), Value::Number)
}

/// One msgpack value as JSON.
pub fn to_json(v: &Mp) -> Value {
    match v {
        Mp::Nil => Value::Null,
        Mp::Boolean(b) => Value::Bool(*b),
        Mp::Integer(i) => i
            .as_i64()
            .map(Value::from)
            .or_else(|| i.as_u64().map(Value::from))
            .unwrap_or(Value::Null),
        Mp::F32(f) => float(f64::from(*f)),
        Mp::F64(f) => float(*f),
        Mp::String(s) => match s.as_str() {
            Some(s) => Value::String(s.to_owned()),
            None => json!({ "$bin": hex(s.as_bytes()) }),
        },
        Mp::Binary(b) => json!({ "$bin": hex(b) }),
        Mp::Array(items) => Value::Array(items.iter().map(to_json).collect()),
        Mp::Map(pairs) => {
            let mut out = Map::new();
            for (k, v) in pairs {
                let key = match k {
                    Mp::String(s) if s.as_str().is_some() => {
                        s.as_str().unwrap_or_default().to_owned()
                    }
                    other => to_json(other).to_string(),
                };
                out.insert(key, to_json(v));
            }
            Value::Object(out)
        }
        Mp::Ext(kind, data) => json!({ "$ext": kind, "hex": hex(data) }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pack(v: &Mp) -> Vec<u8> {
        let mut out = Vec::new();
        rmpv::encode::write_value(&mut out, v).unwrap();
        out
    }

    #[test]
    fn decodes_plain_msgpack() {
        let payload = pack(&Mp::Array(vec![
            Mp::Array(vec![
                Mp::from(1),
                Mp::from("<script>x</script>"),
                Mp::Binary(vec![0, 255]),
                Mp::F64(f64::NAN),
                Mp::from(u64::MAX),
            ]),
            Mp::Map(vec![
                (Mp::from("k"), Mp::from(true)),
                (Mp::from(7), Mp::Nil),
            ]),
            Mp::Nil,
        ]));
        let v = describe(&payload);
        assert_eq!(v["format"], "msgpack");
        assert_eq!(
            v["args"],
            json!([1, "<script>x</script>", {"$bin": "00ff"}, "NaN", u64::MAX])
        );
        assert_eq!(v["kwargs"], json!({"k": true, "7": null}));
        assert_eq!(v["headers"], Value::Null);
    }

    #[test]
    fn other_payloads_say_what_they_are() {
        // pickle (protocol 4): 0x80 reads as an empty msgpack map, then trailing bytes.
        assert_eq!(describe(b"\x80\x04\x95\x05\x00")["format"], "unknown");
        assert_eq!(describe(b"[1, 2]")["format"], "unknown");
        assert_eq!(describe(b"")["format"], "unknown");
        let two = pack(&Mp::Array(vec![Mp::Array(vec![]), Mp::Map(vec![])]));
        assert_eq!(describe(&two)["format"], "unknown");
        // An array claiming 2^32 - 1 items in 5 bytes: refused, nothing reserved.
        assert_eq!(describe(b"\xdd\xff\xff\xff\xff")["format"], "unknown");
        // Deep nesting is refused, not a stack overflow.
        let mut deep = vec![0x93u8, 0x91];
        deep.extend(std::iter::repeat_n(0x91, 10_000));
        assert_eq!(describe(&deep)["format"], "unknown");
        let mut sealed = ardiq_core::sign::MAGIC.to_vec();
        sealed.extend_from_slice(&[0; 64]);
        assert_eq!(describe(&sealed)["format"], "sealed");
    }
}
