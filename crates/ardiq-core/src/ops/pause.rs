//! Pausing and resuming a queue or one lane: `P paused` (PROTOCOL.md, Pausing).

use super::{Client, OpsError};
use crate::keys::Keys;

/// The field of `P paused` that pauses the whole queue.
pub const ALL: &str = "*";

impl Client {
    /// What is paused: `(field, paused-at ms)`, `*` for the whole queue, sorted by field.
    pub async fn paused(&mut self, keys: &Keys) -> Result<Vec<(String, i64)>, OpsError> {
        let mut out: Vec<(String, i64)> =
            self.query(redis::cmd("HGETALL").arg(keys.paused())).await?;
        out.sort();
        Ok(out)
    }

    /// Pauses `field` (a lane, or [`ALL`]) at the server's time; `false` when it was
    /// paused already (its first pause time is kept).
    pub async fn pause(&mut self, keys: &Keys, field: &str) -> Result<bool, OpsError> {
        let now = self.server_ms().await?;
        let added: i64 = self
            .query(redis::cmd("HSETNX").arg(keys.paused()).arg(field).arg(now))
            .await?;
        Ok(added == 1)
    }

    /// Resumes `field`; `false` when it was not paused.
    pub async fn resume(&mut self, keys: &Keys, field: &str) -> Result<bool, OpsError> {
        let removed: i64 = self
            .query(redis::cmd("HDEL").arg(keys.paused()).arg(field))
            .await?;
        Ok(removed == 1)
    }
}
