//! The result record (`P result:<id>`), as the tools read it.

use thiserror::Error;

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

/// Why bytes are not a result record. The text says which field and what was wrong.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum RecordError {
    /// Not an array of at least the eight fields.
    #[error("not a result record: {0}")]
    Shape(String),
    /// A version other than 1 or 2.
    #[error("result record version {0} is unknown (1 or 2 expected)")]
    Version(i64),
    /// One field could not be read.
    #[error("result record field `{field}`: {reason}")]
    Field {
        /// The field's name (PROTOCOL.md, "Result record").
        field: &'static str,
        /// What was wrong.
        reason: String,
    },
}

impl ResultRecord {
    /// Decodes the msgpack record. Anything else (garbage, another shape, an unknown
    /// version) is an error that says what was wrong; it never panics.
    pub fn decode(blob: &[u8]) -> Result<ResultRecord, RecordError> {
        let mut r = msgpack::Reader::new(blob);
        let n = r.array_len().map_err(RecordError::Shape)?;
        if n < 8 {
            return Err(RecordError::Shape(format!("{n} fields, 8 expected")));
        }
        let field = |field: &'static str| move |reason| RecordError::Field { field, reason };
        let version = r.int().map_err(field("version"))?;
        if !matches!(version, 1 | 2) {
            return Err(RecordError::Version(version));
        }
        let ok = r.bool().map_err(field("ok"))?;
        let value = r.bytes().map_err(field("value"))?;
        Ok(ResultRecord {
            ok,
            error: (!ok).then(|| String::from_utf8_lossy(value).into_owned()),
            tries: r.int().map_err(field("tries"))?,
            enqueued_ms: r.int().map_err(field("enqueued_ms"))?,
            started_ms: r.int().map_err(field("started_ms"))?,
            finished_ms: r.int().map_err(field("finished_ms"))?,
            aborted: r.bool().map_err(field("aborted"))?,
        })
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
        assert_eq!(
            ResultRecord::decode(b"\x93\x01\xc3")
                .unwrap_err()
                .to_string(),
            "not a result record: 3 fields, 8 expected"
        );
        assert!(ResultRecord::decode(b"").is_err());
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

    /// A valid version 2 record: `[2, true, bin "x", 1, 2, 3, 4, false]`.
    fn record() -> Vec<u8> {
        vec![
            0x98, 0x02, 0xc3, 0xc4, 0x01, b'x', 0x01, 0x02, 0x03, 0x04, 0xc2,
        ]
    }

    #[test]
    fn every_cut_of_a_record_is_an_error() {
        let full = record();
        assert!(ResultRecord::decode(&full).is_ok());
        for n in 0..full.len() {
            let e = ResultRecord::decode(&full[..n]).unwrap_err();
            assert!(e.to_string().contains("ends"), "{n}: {e}");
        }
    }

    #[test]
    fn says_what_is_wrong() {
        let err = |b: &[u8]| ResultRecord::decode(b).unwrap_err().to_string();
        // Not an array at all; an unknown version.
        assert_eq!(
            err(b"\xa3abc"),
            "not a result record: an array expected, found FixStr(3)"
        );
        let mut v3 = record();
        v3[1] = 0x03;
        assert_eq!(
            err(&v3),
            "result record version 3 is unknown (1 or 2 expected)"
        );
        // A string where `ok` goes; a u64 beyond i64 for `tries`.
        let mut bad_ok = record();
        bad_ok[2] = 0xa0;
        assert_eq!(
            err(&bad_ok),
            "result record field `ok`: a boolean expected, found FixStr(0)"
        );
        let mut big = record()[..6].to_vec();
        big.push(0xcf);
        big.extend_from_slice(&u64::MAX.to_be_bytes());
        big.extend_from_slice(&[0x02, 0x03, 0x04, 0xc2]);
        assert_eq!(
            err(&big),
            "result record field `tries`: an integer out of range"
        );
    }

    #[test]
    fn announced_lengths_beyond_the_data_allocate_nothing() {
        // An array of 2^32 - 1 elements, then a str32 of 4 GiB: both refused from the
        // bytes there are.
        let mut huge = vec![
            0xdd, 0xff, 0xff, 0xff, 0xff, 0x02, 0xc2, 0xdb, 0xff, 0xff, 0xff, 0xff,
        ];
        huge.extend_from_slice(b"tiny");
        assert_eq!(
            ResultRecord::decode(&huge).unwrap_err().to_string(),
            "result record field `value`: a string of 4294967295 bytes announced, the data ends after 4"
        );
    }

    proptest::proptest! {
        #[test]
        fn garbage_never_panics(blob in proptest::collection::vec(proptest::num::u8::ANY, 0..64)) {
            let _ = ResultRecord::decode(&blob);
        }

        #[test]
        fn a_damaged_record_never_panics(at in 0usize..11, byte in proptest::num::u8::ANY) {
            let mut blob = record();
            blob[at] = byte;
            let _ = ResultRecord::decode(&blob);
        }
    }
}
