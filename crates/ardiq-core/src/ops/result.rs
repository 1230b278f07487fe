//! The result record (`P result:<id>`), as the tools read it.

use super::msgpack;

/// The result record `[version, ok, value, tries, enqueued, started, finished, aborted]`
/// (version 1 or 2: PROTOCOL.md, "Result record").
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ResultRecord {
    /// It succeeded.
    pub ok: bool,
    /// On failure, what went wrong (the value of a success is the app's bytes, not shown).
    pub error: Option<String>,
    /// Attempts made.
    pub tries: i64,
    /// Epoch ms (0: unknown / never started).
    pub enqueued_ms: i64,
    /// Epoch ms, 0 when it never started.
    pub started_ms: i64,
    /// Epoch ms.
    pub finished_ms: i64,
    /// It was aborted (or purged).
    pub aborted: bool,
}

impl ResultRecord {
    /// Decodes the msgpack record; `None` for anything else.
    pub fn decode(blob: &[u8]) -> Option<ResultRecord> {
        let mut r = msgpack::Reader::new(blob);
        let n = r.array_len()?;
        if n < 8 || !matches!(r.int()?, 1 | 2) {
            return None;
        }
        let ok = r.bool()?;
        let value = r.bytes()?;
        let rec = ResultRecord {
            ok,
            error: (!ok).then(|| String::from_utf8_lossy(value).into_owned()),
            tries: r.int()?,
            enqueued_ms: r.int()?,
            started_ms: r.int()?,
            finished_ms: r.int()?,
            aborted: r.bool()?,
        };
        Some(rec)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_result_records() {
        // [1, false, "boom", 3, 1700000000000, 0, 1700000000500, true]
        let mut blob = vec![0x98, 0x01, 0xc2, 0xa4];
        blob.extend_from_slice(b"boom");
        blob.push(0x03);
        blob.push(0xcf);
        blob.extend_from_slice(&1_700_000_000_000u64.to_be_bytes());
        blob.push(0x00);
        blob.push(0xd3);
        blob.extend_from_slice(&1_700_000_000_500i64.to_be_bytes());
        blob.push(0xc3);
        let r = ResultRecord::decode(&blob).unwrap();
        assert_eq!(
            r,
            ResultRecord {
                ok: false,
                error: Some("boom".into()),
                tries: 3,
                enqueued_ms: 1_700_000_000_000,
                started_ms: 0,
                finished_ms: 1_700_000_000_500,
                aborted: true,
            }
        );
        assert!(ResultRecord::decode(b"\x93\x01\xc3").is_none());
        assert!(ResultRecord::decode(b"").is_none());
        let mut ok = vec![0x98, 0x01, 0xc3, 0xc4, 0x01, 0x05, 0x01, 0xcd, 0x01, 0x00];
        ok.extend_from_slice(&[0xce, 0, 0, 1, 0, 0xcb]);
        ok.extend_from_slice(&12.0f64.to_bits().to_be_bytes());
        ok.push(0xc2);
        let r = ResultRecord::decode(&ok).unwrap();
        assert!(r.ok && r.error.is_none() && !r.aborted);
        assert_eq!(
            (r.tries, r.enqueued_ms, r.started_ms, r.finished_ms),
            (1, 256, 256, 12)
        );
    }
}
