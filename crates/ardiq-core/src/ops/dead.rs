//! Dead letters: listing them, and the `replay` and `delete_dead` scripts.

use super::{Client, OpsError};
use crate::keys::Keys;
use crate::scripts;

impl Client {
    /// The newest dead letters first: `(total, letters[offset..offset + limit])`.
    pub async fn dead_letters(
        &mut self,
        keys: &Keys,
        offset: usize,
        limit: usize,
    ) -> Result<(u64, Vec<DeadLetter>), OpsError> {
        let total: u64 = self
            .query(redis::cmd("ZCARD").arg(keys.dead_index()))
            .await?;
        if limit == 0 {
            return Ok((total, Vec::new()));
        }
        let ids: Vec<String> = self
            .query(
                redis::cmd("ZREVRANGE")
                    .arg(keys.dead_index())
                    .arg(offset)
                    .arg(offset + limit - 1),
            )
            .await?;
        let mut out = Vec::with_capacity(ids.len());
        for id in ids {
            if let Some(d) = self.dead_letter(keys, &id).await? {
                out.push(d);
            }
        }
        Ok((total, out))
    }

    /// One dead letter, if there is one under `id`.
    pub async fn dead_letter(
        &mut self,
        keys: &Keys,
        id: &str,
    ) -> Result<Option<DeadLetter>, OpsError> {
        let fields: Vec<Option<String>> = self
            .query(
                redis::cmd("HMGET")
                    .arg(keys.dead(id))
                    .arg(&["fn", "l", "err", "t", "enq", "fail"]),
            )
            .await?;
        let Some(fn_name) = fields[0].clone() else {
            return Ok(None);
        };
        let num = |i: usize| -> i64 {
            fields[i]
                .as_deref()
                .and_then(|s| s.parse().ok())
                .unwrap_or(0)
        };
        Ok(Some(DeadLetter {
            id: id.to_owned(),
            fn_name,
            lane: fields[1].clone().unwrap_or_default(),
            error: fields[2].clone().unwrap_or_default(),
            tries: num(3),
            enqueued_ms: num(4),
            failed_ms: num(5),
        }))
    }

    /// Every dead-letter id, oldest first.
    pub async fn dead_ids(&mut self, keys: &Keys) -> Result<Vec<String>, OpsError> {
        self.query(redis::cmd("ZRANGE").arg(keys.dead_index()).arg(0).arg(-1))
            .await
    }

    /// `replay`: 1 re-queued, 0 no such dead letter, -1 a live task holds the id, -2 its
    /// lane is not one of `keys`' lanes, -3 its payload is sealed and `signing` holds no
    /// key, -4 its seal does not verify under `signing` (or is a version 1 seal).
    ///
    /// A replay is a new enqueue: a sealed payload is opened and sealed again with a new
    /// nonce and a not-after `ttl_ms` from now (PROTOCOL.md, Signed payloads).
    pub async fn replay(
        &mut self,
        keys: &Keys,
        id: &str,
        signing: &[crate::SigningKey],
        ttl_ms: i64,
    ) -> Result<i64, OpsError> {
        let fields: Vec<Option<Vec<u8>>> = self
            .query(
                redis::cmd("HMGET")
                    .arg(keys.dead(id))
                    .arg(&["fn", "l", "p"]),
            )
            .await?;
        let text = |i: usize| {
            String::from_utf8_lossy(fields[i].as_deref().unwrap_or_default()).into_owned()
        };
        let payload = fields[2].clone().unwrap_or_default();
        let (resealed, nonce) = if crate::sign::is_sealed(&payload) {
            let Some(key) = signing.first() else {
                return Ok(-3);
            };
            let (fn_name, lane) = (text(0), text(1));
            let binding = crate::sign::Binding {
                queue: keys.queue(),
                lane: &lane,
                task_id: id,
                fn_name: &fn_name,
            };
            let Ok(opened) = crate::sign::open(signing, &binding, &payload) else {
                return Ok(-4);
            };
            let nonce = crate::sign::new_nonce();
            let now = crate::context::local_now_ms();
            let sealed = key.seal(&binding, &nonce, now.saturating_add(ttl_ms), &opened.body);
            (sealed, crate::sign::nonce_hex(&nonce))
        } else {
            (Vec::new(), String::new())
        };
        let mut inv = scripts::REPLAY.prepare_invoke();
        inv.key(keys.dead_index())
            .key(keys.dead(id))
            .key(keys.job(id))
            .key(keys.result(id));
        for i in 0..keys.lanes().len() {
            inv.key(keys.stream(i));
        }
        inv.arg(id)
            .arg(&resealed[..])
            .arg(&nonce)
            .arg(keys.lanes().len());
        for lane in keys.lanes() {
            inv.arg(lane);
        }
        match inv.invoke_async(&mut self.conn).await {
            Ok(v) => Ok(v),
            Err(e) => Err(self.err(e)),
        }
    }

    /// `delete_dead`: 1 deleted, 0 no such dead letter.
    pub async fn delete_dead(&mut self, keys: &Keys, id: &str) -> Result<i64, OpsError> {
        let mut inv = scripts::DELETE_DEAD.prepare_invoke();
        inv.key(keys.dead_index()).key(keys.dead(id)).arg(id);
        match inv.invoke_async(&mut self.conn).await {
            Ok(v) => Ok(v),
            Err(e) => Err(self.err(e)),
        }
    }
}

/// One dead letter (its payload is left out: arguments may hold secrets).
#[derive(Debug, Clone, Default)]
pub struct DeadLetter {
    /// The task id.
    pub id: String,
    /// The task name.
    pub fn_name: String,
    /// Its lane.
    pub lane: String,
    /// Why it died.
    pub error: String,
    /// Attempts made.
    pub tries: i64,
    /// Enqueued at, epoch ms.
    pub enqueued_ms: i64,
    /// Failed at, epoch ms.
    pub failed_ms: i64,
}
