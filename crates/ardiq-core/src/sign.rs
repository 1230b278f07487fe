//! Payload and result seals: the engine's half of `python/ardiq/signing.py`.
//!
//! With a signing key set, every payload carries an HMAC-SHA256 tag inside the payload
//! field itself (PROTOCOL.md, "Signed payloads"), so every script that copies a payload
//! keeps the tag without knowing about it. The tag binds the payload to its queue, lane,
//! task id and task name, to a nonce the live job record also holds, and to a not-after
//! time. Producers seal what they enqueue and the Python runtime checks the seal before it
//! decodes a byte; the engine seals the cron occurrences it enqueues itself, and the ops
//! tools open and re-seal a dead letter they replay (a replay is a new enqueue).

use std::fmt;
use std::sync::Arc;

use hmac::{Hmac, Mac};
use sha2::Sha256;
use thiserror::Error;

/// Starts every v2-sealed payload. 0xc1 is a byte msgpack never uses.
pub const MAGIC: &[u8] = b"\xc1AQS2";
/// Starts a version 1 seal (tag over id, name and body only; refused by default).
pub const MAGIC_V1: &[u8] = b"\xc1AQS1";
/// Starts a sealed success value in a result record.
pub const RESULT_MAGIC: &[u8] = b"\xc1AQR2";

const DOMAIN: &[u8] = b"ardiq-sig2\x00";
const TAG_LEN: usize = 32;
/// Random bytes per enqueue, also stored (hex) as the job's `n`.
pub const NONCE_LEN: usize = 16;
const HEADER_LEN: usize = 5 + TAG_LEN + NONCE_LEN + 8;

/// How long a sealed payload stays runnable after its due time, unless the app says.
pub const DEFAULT_TTL_MS: i64 = 7 * 24 * 3600 * 1000;

/// What a seal binds a payload to.
#[derive(Debug, Clone, Copy)]
pub struct Binding<'a> {
    pub queue: &'a str,
    pub lane: &'a str,
    pub task_id: &'a str,
    pub fn_name: &'a str,
}

/// Why a seal was refused (the texts are the protocol's reasons).
#[derive(Debug, Error, PartialEq, Eq)]
pub enum SealError {
    #[error("unsigned payload")]
    Unsigned,
    #[error("signature mismatch")]
    Mismatch,
}

/// A payload whose seal verified.
#[derive(Debug, PartialEq, Eq)]
pub struct Opened {
    pub nonce: [u8; NONCE_LEN],
    pub not_after_ms: i64,
    pub body: Vec<u8>,
}

/// A shared secret that signs payloads. Its `Debug` never shows the key.
#[derive(Clone)]
pub struct SigningKey(Arc<[u8]>);

impl SigningKey {
    /// Wraps the key bytes (the Python app checked their length).
    pub fn new(key: impl Into<Vec<u8>>) -> Self {
        SigningKey(key.into().into())
    }

    fn mac(&self) -> Hmac<Sha256> {
        // HMAC accepts a key of any length: this cannot fail.
        <Hmac<Sha256> as Mac>::new_from_slice(&self.0).expect("HMAC-SHA256 takes any key")
    }

    fn tag(&self, b: &Binding<'_>, nonce: &[u8], not_after_ms: i64, body: &[u8]) -> [u8; 32] {
        let mut mac = self.mac();
        mac.update(DOMAIN);
        for part in [b.queue, b.lane, b.task_id, b.fn_name] {
            update_framed(&mut mac, part.as_bytes());
        }
        mac.update(nonce);
        mac.update(&not_after_ms.to_be_bytes());
        mac.update(body);
        mac.finalize().into_bytes().into()
    }

    /// `MAGIC | tag | nonce | not_after | body`: the payload to store for `body`.
    pub fn seal(
        &self,
        b: &Binding<'_>,
        nonce: &[u8; NONCE_LEN],
        not_after_ms: i64,
        body: &[u8],
    ) -> Vec<u8> {
        let tag = self.tag(b, nonce, not_after_ms, body);
        let mut out = Vec::with_capacity(HEADER_LEN + body.len());
        out.extend_from_slice(MAGIC);
        out.extend_from_slice(&tag);
        out.extend_from_slice(nonce);
        out.extend_from_slice(&not_after_ms.to_be_bytes());
        out.extend_from_slice(body);
        out
    }
}

fn update_framed(mac: &mut Hmac<Sha256>, part: &[u8]) {
    let len = u32::try_from(part.len()).unwrap_or(u32::MAX);
    mac.update(&len.to_be_bytes());
    mac.update(part);
}

/// Checks `payload`'s v2 seal against every key (all are tried, so the time taken does
/// not tell which matched) and returns what it sealed. The nonce and not-after are the
/// caller's to check against the live job and the clock.
pub fn open(keys: &[SigningKey], b: &Binding<'_>, payload: &[u8]) -> Result<Opened, SealError> {
    if !payload.starts_with(MAGIC) {
        return Err(SealError::Unsigned);
    }
    if payload.len() < HEADER_LEN {
        return Err(SealError::Mismatch);
    }
    let tag = &payload[5..5 + TAG_LEN];
    let nonce: [u8; NONCE_LEN] = payload[5 + TAG_LEN..5 + TAG_LEN + NONCE_LEN]
        .try_into()
        .map_err(|_| SealError::Mismatch)?;
    let at = 5 + TAG_LEN + NONCE_LEN;
    let not_after_ms = i64::from_be_bytes(
        payload[at..at + 8]
            .try_into()
            .map_err(|_| SealError::Mismatch)?,
    );
    let body = &payload[HEADER_LEN..];
    let mut ok = false;
    for key in keys {
        let mut mac = key.mac();
        mac.update(DOMAIN);
        for part in [b.queue, b.lane, b.task_id, b.fn_name] {
            update_framed(&mut mac, part.as_bytes());
        }
        mac.update(&nonce);
        mac.update(&not_after_ms.to_be_bytes());
        mac.update(body);
        // `verify_slice` compares in constant time.
        ok |= mac.verify_slice(tag).is_ok();
    }
    if !ok {
        return Err(SealError::Mismatch);
    }
    Ok(Opened {
        nonce,
        not_after_ms,
        body: body.to_vec(),
    })
}

/// Does `payload` carry a seal of any version?
pub fn is_sealed(payload: &[u8]) -> bool {
    payload.starts_with(MAGIC) || payload.starts_with(MAGIC_V1)
}

/// A fresh random nonce.
pub fn new_nonce() -> [u8; NONCE_LEN] {
    rand::random()
}

/// The nonce as the job record stores it (`n`): lowercase hex.
pub fn nonce_hex(nonce: &[u8]) -> String {
    nonce.iter().map(|b| format!("{b:02x}")).collect()
}

impl fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SigningKey(***)")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const BINDING: Binding<'static> = Binding {
        queue: "q",
        lane: "default",
        task_id: "cron:tick:60000",
        fn_name: "tick",
    };

    #[test]
    fn seals_as_the_python_package_does() {
        // python -c "from ardiq.signing import Signer, Binding;
        //   s = Signer([b'k'*32]);
        //   print(s.seal(Binding('q', 'default', 'cron:tick:60000', 'tick'),
        //                b'\x00'*16, 1234, b'\x93\x90\x80\xc0').hex())"
        let key = SigningKey::new(vec![b'k'; 32]);
        let sealed = key.seal(&BINDING, &[0; 16], 1234, b"\x93\x90\x80\xc0");
        let hex = nonce_hex(&sealed);
        assert_eq!(
            hex,
            include_str!("../../../tests/vectors/seal_v2.hex").trim(),
            "the seal differs from the Python package's (tests/vectors/seal_v2.hex)"
        );
        assert_eq!(format!("{key:?}"), "SigningKey(***)");
    }

    #[test]
    fn opens_only_what_it_sealed() {
        let key = SigningKey::new(vec![b'k'; 32]);
        let other = SigningKey::new(vec![b'o'; 32]);
        let sealed = key.seal(&BINDING, &[7; 16], 99, b"body");
        let opened = open(&[other.clone(), key.clone()], &BINDING, &sealed).unwrap();
        assert_eq!(opened.body, b"body");
        assert_eq!((opened.nonce, opened.not_after_ms), ([7; 16], 99));
        assert_eq!(open(&[other], &BINDING, &sealed), Err(SealError::Mismatch));
        assert_eq!(
            open(std::slice::from_ref(&key), &BINDING, b"\x93"),
            Err(SealError::Unsigned)
        );
        for moved in [
            Binding {
                lane: "high",
                ..BINDING
            },
            Binding {
                queue: "q2",
                ..BINDING
            },
            Binding {
                task_id: "x",
                ..BINDING
            },
            Binding {
                fn_name: "y",
                ..BINDING
            },
        ] {
            assert_eq!(
                open(std::slice::from_ref(&key), &moved, &sealed),
                Err(SealError::Mismatch)
            );
        }
        let mut later = sealed.clone();
        later[5 + TAG_LEN + NONCE_LEN + 7] ^= 1; // a forged not-after
        assert_eq!(open(&[key], &BINDING, &later), Err(SealError::Mismatch));
    }
}
