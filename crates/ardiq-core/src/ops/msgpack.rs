//! Reading the msgpack of a result record (what Lua's `cmsgpack` writes) with `rmp`'s
//! low-level decoder: one element at a time from the borrowed bytes, so nothing is
//! allocated whatever lengths a record announces, and anything malformed ends in an
//! error saying what was wrong, never a panic.

use rmp::decode::{self, Bytes, NumValueReadError, ValueReadError};
use rmp::Marker;

/// What went wrong reading one element: `what` was expected.
fn describe<E>(what: &str, e: ValueReadError<E>) -> String
where
    E: decode::RmpReadErr,
{
    match e {
        ValueReadError::TypeMismatch(found) => format!("{what} expected, found {found:?}"),
        ValueReadError::InvalidMarkerRead(_) | ValueReadError::InvalidDataRead(_) => {
            format!("the data ends inside {what}")
        }
    }
}

pub struct Reader<'a> {
    rd: Bytes<'a>,
}

impl<'a> Reader<'a> {
    pub fn new(buf: &'a [u8]) -> Self {
        Reader {
            rd: Bytes::new(buf),
        }
    }

    /// The marker of the next element, not consumed.
    fn peek(&self, what: &str) -> Result<Marker, String> {
        match self.rd.remaining_slice().first() {
            Some(b) => Ok(Marker::from_u8(*b)),
            None => Err(format!("{what} expected, the data ends")),
        }
    }

    pub fn array_len(&mut self) -> Result<u32, String> {
        decode::read_array_len(&mut self.rd).map_err(|e| describe("an array", e))
    }

    pub fn bool(&mut self) -> Result<bool, String> {
        decode::read_bool(&mut self.rd).map_err(|e| describe("a boolean", e))
    }

    /// An integer of any width, or a float holding one (cmsgpack writes a whole number
    /// Lua holds as a double as a float); a float is truncated.
    pub fn int(&mut self) -> Result<i64, String> {
        const WHAT: &str = "an integer";
        match self.peek(WHAT)? {
            Marker::F32 => {
                Ok(decode::read_f32(&mut self.rd).map_err(|e| describe(WHAT, e))? as i64)
            }
            Marker::F64 => {
                Ok(decode::read_f64(&mut self.rd).map_err(|e| describe(WHAT, e))? as i64)
            }
            _ => decode::read_int(&mut self.rd).map_err(|e| match e {
                NumValueReadError::OutOfRange => format!("{WHAT} out of range"),
                NumValueReadError::TypeMismatch(found) => {
                    format!("{WHAT} expected, found {found:?}")
                }
                NumValueReadError::InvalidMarkerRead(_) | NumValueReadError::InvalidDataRead(_) => {
                    format!("the data ends inside {WHAT}")
                }
            }),
        }
    }

    /// A str or bin, borrowed.
    pub fn bytes(&mut self) -> Result<&'a [u8], String> {
        const WHAT: &str = "a string";
        let len = match self.peek(WHAT)? {
            Marker::Bin8 | Marker::Bin16 | Marker::Bin32 => decode::read_bin_len(&mut self.rd),
            _ => decode::read_str_len(&mut self.rd),
        }
        .map_err(|e| describe(WHAT, e))? as usize;
        let rest = self.rd.remaining_slice();
        if rest.len() < len {
            return Err(format!(
                "a string of {len} bytes announced, the data ends after {}",
                rest.len()
            ));
        }
        let (data, tail) = rest.split_at(len);
        self.rd = Bytes::new(tail);
        Ok(data)
    }
}
