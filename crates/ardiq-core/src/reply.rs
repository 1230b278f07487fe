//! Small readers for raw Redis replies.
//!
//! The engine reads script replies as [`redis::Value`] and picks them apart by hand, so a
//! reply of an unexpected shape becomes an error or a skipped item, never a panic. Both
//! RESP2 (flat arrays) and RESP3 (maps) shapes are accepted.

use redis::Value;

/// The bytes of a string-like reply.
pub fn bytes(v: &Value) -> Option<&[u8]> {
    match v {
        Value::BulkString(b) => Some(b),
        Value::SimpleString(s) => Some(s.as_bytes()),
        Value::VerbatimString { text, .. } => Some(text.as_bytes()),
        Value::Okay => Some(b"OK"),
        _ => None,
    }
}

/// A string-like reply as UTF-8 text (lossy: ids and names are text by protocol).
pub fn string(v: &Value) -> Option<String> {
    match v {
        Value::Int(i) => Some(i.to_string()),
        other => bytes(other).map(|b| String::from_utf8_lossy(b).into_owned()),
    }
}

/// An integer reply, or a decimal string holding one.
pub fn int(v: &Value) -> Option<i64> {
    match v {
        Value::Int(i) => Some(*i),
        Value::Double(d) if d.fract() == 0.0 => Some(*d as i64),
        other => std::str::from_utf8(bytes(other)?).ok()?.trim().parse().ok(),
    }
}

/// The items of an array-like reply; `Nil` reads as empty.
pub fn array(v: &Value) -> Option<&[Value]> {
    match v {
        Value::Array(a) | Value::Set(a) => Some(a),
        Value::Push { data, .. } => Some(data),
        Value::Nil => Some(&[]),
        _ => None,
    }
}

/// Field/value pairs from a flat array (RESP2) or a map (RESP3).
pub fn pairs(v: &Value) -> Option<Vec<(&Value, &Value)>> {
    match v {
        Value::Map(m) => Some(m.iter().map(|(k, v)| (k, v)).collect()),
        other => {
            let a = array(other)?;
            Some(a.chunks_exact(2).map(|c| (&c[0], &c[1])).collect())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_shapes() {
        assert_eq!(int(&Value::BulkString(b"42".to_vec())), Some(42));
        assert_eq!(int(&Value::BulkString(b"x".to_vec())), None);
        assert_eq!(int(&Value::Int(-1)), Some(-1));
        assert_eq!(string(&Value::Int(3)).as_deref(), Some("3"));
        assert_eq!(array(&Value::Nil).map(<[Value]>::len), Some(0));
        let flat = Value::Array(vec![
            Value::BulkString(b"a".to_vec()),
            Value::BulkString(b"1".to_vec()),
            Value::BulkString(b"dangling".to_vec()),
        ]);
        assert_eq!(pairs(&flat).unwrap().len(), 1);
        assert!(pairs(&Value::Int(1)).is_none());
    }
}
