//! Payload signing: the engine's half of `python/ardiq/signing.py`.
//!
//! With a signing key set, every payload carries an HMAC-SHA256 tag over the task id, the
//! task name and the serializer's bytes, inside the payload field itself (PROTOCOL.md,
//! "Signed payloads"), so every script that copies a payload keeps the tag without
//! knowing about it. Producers seal what they enqueue and the Python runtime checks the
//! tag before it decodes a byte; the engine only seals, for the cron occurrences it
//! enqueues itself (their ids name the occurrence, so they are sealed one by one).

use std::fmt;
use std::sync::Arc;

use hmac::{Hmac, Mac};
use sha2::Sha256;

/// Starts every sealed payload. 0xc1 is a byte msgpack never uses.
pub const MAGIC: &[u8] = b"\xc1AQS1";

/// Domain separation: the tag of a payload is never the tag of anything else.
const DOMAIN: &[u8] = b"ardiq-sig1\x00";

/// A shared secret that signs payloads. Its `Debug` never shows the key.
#[derive(Clone)]
pub struct SigningKey(Arc<[u8]>);

impl SigningKey {
    /// Wraps the key bytes (the Python app checked their length).
    pub fn new(key: impl Into<Vec<u8>>) -> Self {
        SigningKey(key.into().into())
    }

    /// `MAGIC | tag | body`: the payload to store for `body` of task `task_id` named
    /// `fn_name`.
    pub fn seal(&self, task_id: &str, fn_name: &str, body: &[u8]) -> Vec<u8> {
        // HMAC accepts a key of any length: this cannot fail.
        let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(&self.0)
            .expect("HMAC-SHA256 takes keys of any length");
        mac.update(DOMAIN);
        for part in [task_id.as_bytes(), fn_name.as_bytes()] {
            let len = u32::try_from(part.len()).unwrap_or(u32::MAX);
            mac.update(&len.to_be_bytes());
            mac.update(part);
        }
        mac.update(body);
        let tag = mac.finalize().into_bytes();
        let mut out = Vec::with_capacity(MAGIC.len() + tag.len() + body.len());
        out.extend_from_slice(MAGIC);
        out.extend_from_slice(&tag);
        out.extend_from_slice(body);
        out
    }
}

impl fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SigningKey(***)")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seals_as_the_python_package_does() {
        // python -c "from ardiq.signing import Signer;
        //   print(Signer([b'k'*32]).seal('cron:tick:60000', 'tick', b'\x93\x90\x80\xc0').hex())"
        let key = SigningKey::new(vec![b'k'; 32]);
        let sealed = key.seal("cron:tick:60000", "tick", b"\x93\x90\x80\xc0");
        let hex: String = sealed.iter().map(|b| format!("{b:02x}")).collect();
        assert_eq!(
            hex,
            "c141515331ad80d050eab8fced47d0f956229910fee3df47010e81e5db85792c01fb8ed221939080c0"
        );
        assert_eq!(format!("{key:?}"), "SigningKey(***)");
        // Another id or name gives another tag.
        assert_ne!(
            key.seal("cron:tick:120000", "tick", b"x")[..37],
            key.seal("cron:tick:60000", "tick", b"x")[..37]
        );
    }
}
