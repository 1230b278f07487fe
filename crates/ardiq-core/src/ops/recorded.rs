//! What workers record about a task as JSON texts: its progress (`P progress:<id>`, one
//! text) and its failed attempts (`P attempts:<id>`, a list of texts, oldest first), see
//! PROTOCOL.md, "Progress" and "History". Read as they are: the tools show what is there,
//! and anything that is not a JSON object (or a key of another type) becomes an
//! [`Unreadable`] reason instead of failing the read.

use redis::{RedisError, Value};
use serde_json::{Map, Value as Json};

use super::{Client, OpsError};
use crate::keys::Keys;
use crate::reply;

/// Why a recorded text could not be read; its text says so.
pub type Unreadable = String;

/// One recorded JSON object, or why it is not one.
pub type Recorded = Result<Map<String, Json>, Unreadable>;

/// Reads one recorded text: a JSON object, else why not.
pub fn parse(text: &[u8]) -> Recorded {
    let text = std::str::from_utf8(text).map_err(|e| format!("not UTF-8 text: {e}"))?;
    match serde_json::from_str::<Json>(text) {
        Ok(Json::Object(map)) => Ok(map),
        Ok(other) => Err(format!("a JSON {}, not an object", kind(&other))),
        Err(e) => Err(format!("not JSON: {e}")),
    }
}

fn kind(v: &Json) -> &'static str {
    match v {
        Json::Null => "null",
        Json::Bool(_) => "boolean",
        Json::Number(_) => "number",
        Json::String(_) => "string",
        Json::Array(_) => "array",
        Json::Object(_) => "object",
    }
}

/// A key of another type than the protocol's: said, not an error of the whole read.
fn wrong_type(e: &RedisError, key: &str, want: &str) -> Option<Unreadable> {
    (e.code() == Some("WRONGTYPE")).then(|| format!("`{key}` is not a {want}"))
}

impl Client {
    /// The task's latest progress (`None`: none recorded, or it expired).
    pub async fn progress(&mut self, keys: &Keys, id: &str) -> Result<Option<Recorded>, OpsError> {
        let key = keys.progress(id);
        let reply: Result<Option<Vec<u8>>, RedisError> = redis::cmd("GET")
            .arg(&key)
            .query_async(&mut self.conn)
            .await;
        match reply {
            Ok(text) => Ok(text.as_deref().map(parse)),
            Err(e) => match wrong_type(&e, &key, "string") {
                Some(why) => Ok(Some(Err(why))),
                None => Err(self.err(e)),
            },
        }
    }

    /// The task's failed attempts, oldest first (the protocol keeps the last 25).
    pub async fn attempts(&mut self, keys: &Keys, id: &str) -> Result<Vec<Recorded>, OpsError> {
        let key = keys.attempts(id);
        let reply: Result<Value, RedisError> = redis::cmd("LRANGE")
            .arg(&key)
            .arg(0)
            .arg(-1)
            .query_async(&mut self.conn)
            .await;
        match reply {
            Ok(list) => Ok(reply::array(&list)
                .unwrap_or_default()
                .iter()
                .map(|item| match reply::bytes(item) {
                    Some(text) => parse(text),
                    None => Err("not a string".to_owned()),
                })
                .collect()),
            Err(e) => match wrong_type(&e, &key, "list") {
                Some(why) => Ok(vec![Err(why)]),
                None => Err(self.err(e)),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_objects_and_says_why_anything_else_is_not_one() {
        let p = parse(br#"{"v": 42, "m": "resizing", "t": 1, "at": 1700000000000}"#).unwrap();
        assert_eq!(p["v"], 42);
        assert_eq!(p["m"], "resizing");
        assert_eq!(parse(b"[1, 2]").unwrap_err(), "a JSON array, not an object");
        assert_eq!(parse(b"7").unwrap_err(), "a JSON number, not an object");
        assert!(parse(b"{\"v\": ").unwrap_err().starts_with("not JSON: "));
        assert!(parse(b"").unwrap_err().starts_with("not JSON: "));
        assert!(parse(b"\xff\xfe{}")
            .unwrap_err()
            .starts_with("not UTF-8 text: "));
        // Nesting past serde_json's limit is an error, not a stack overflow.
        let deep = "[".repeat(100_000);
        assert!(parse(format!("{{\"v\": {deep}").as_bytes()).is_err());
    }

    #[test]
    fn names_the_keys_of_the_protocol() {
        let keys = Keys::new("q", &["default".into()]);
        assert_eq!(keys.progress("t1"), "ardiq:{q}:progress:t1");
        assert_eq!(keys.attempts("t1"), "ardiq:{q}:attempts:t1");
    }
}
