//! Pausing, resuming and triggering crons (`ardiq cron`, the dashboard). A pause is a
//! field of `P crons:paused` (name -> when it was paused, epoch ms), which the `cron`
//! script reads at each occurrence; `P crons` keeps only the last occurrence fired.

use super::{Client, OpsError};
use crate::config::{Config, CronEntry};
use crate::keys::Keys;
use crate::scheduler::{self, Fired};

/// The task id of a run triggered by hand: `cron:<name>:now:<32 hex digits>`, never one
/// of an occurrence (those end in a number), never the same twice.
pub fn triggered_id(name: &str) -> String {
    format!("cron:{name}:now:{:032x}", rand::random::<u128>())
}

impl Client {
    /// `P crons:paused`: each paused cron and when it was paused (epoch ms), by name.
    pub async fn cron_paused(&mut self, keys: &Keys) -> Result<Vec<(String, i64)>, OpsError> {
        let map: Vec<(String, String)> = self
            .query(redis::cmd("HGETALL").arg(keys.crons_paused()))
            .await?;
        let mut out: Vec<(String, i64)> = map
            .into_iter()
            .map(|(name, ms)| (name, ms.parse().unwrap_or(0)))
            .collect();
        out.sort();
        Ok(out)
    }

    /// Pauses cron `name` from now (by the Redis clock); `false` if it was paused already
    /// (the first pause time is kept).
    pub async fn pause_cron(&mut self, keys: &Keys, name: &str) -> Result<bool, OpsError> {
        let now = self.server_ms().await?;
        let added: i64 = self
            .query(
                redis::cmd("HSETNX")
                    .arg(keys.crons_paused())
                    .arg(name)
                    .arg(now),
            )
            .await?;
        Ok(added == 1)
    }

    /// Resumes cron `name`: its next occurrence fires, the ones missed while paused do
    /// not. `false` if it was not paused.
    pub async fn resume_cron(&mut self, keys: &Keys, name: &str) -> Result<bool, OpsError> {
        let removed: i64 = self
            .query(redis::cmd("HDEL").arg(keys.crons_paused()).arg(name))
            .await?;
        Ok(removed == 1)
    }

    /// Enqueues one run of `cron` now, under a fresh id (returned), sealed when `config`
    /// signs, as its occurrences are. Paused or not; the schedule is left alone.
    pub async fn trigger_cron(
        &mut self,
        keys: &Keys,
        config: &Config,
        cron: &CronEntry,
    ) -> Result<String, OpsError> {
        let now = self.server_ms().await?;
        let id = triggered_id(&cron.name);
        let fired = scheduler::invoke(&mut self.conn, keys, config, cron, &id, 0, now)
            .await
            .map_err(|e| self.err(e))?;
        debug_assert_eq!(fired, Fired::Enqueued, "a fresh id is free");
        Ok(id)
    }
}
