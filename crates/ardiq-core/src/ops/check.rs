//! What `ardiq check` verifies, with the worker's own credentials.

use super::{Client, OpsError};
use crate::keys::{Keys, GROUP};
use crate::scripts;

impl Client {
    /// What `ardiq check` verifies, in order: the server answers; the scripts run on the
    /// queue's keys (`queue_size`, which also settles [`scripts::mode`]: in functions
    /// mode no script-loading right is needed); each lane's stream is readable and has the group;
    /// the worker's writes are allowed (no-op `ZADD XX` on `P workers`, `XACK 0-0` on
    /// each stream); the abort channel can be subscribed. Changes nothing.
    ///
    /// Returns the lanes whose group is missing (empty: all good); permission problems
    /// come back as [`OpsError::Denied`].
    pub async fn check(&mut self, keys: &Keys) -> Result<Vec<String>, OpsError> {
        self.ping().await?;
        let mut inv = scripts::QUEUE_SIZE.prepare_invoke();
        inv.key(keys.delayed());
        for i in 0..keys.lanes().len() {
            inv.key(keys.stream(i));
        }
        inv.arg(GROUP);
        let _: i64 = match inv.invoke_async(&mut self.conn).await {
            Ok(v) => v,
            Err(e) => return Err(self.err(e)),
        };
        let mut missing = Vec::new();
        for (i, lane) in keys.lanes().iter().enumerate() {
            let has_group = self.pending_summary(keys.stream(i)).await?.is_some();
            if !has_group {
                missing.push(lane.clone());
            }
            let _: i64 = self
                .query(redis::cmd("XACK").arg(keys.stream(i)).arg(GROUP).arg("0-0"))
                .await?;
        }
        let _: i64 = self
            .query(
                redis::cmd("ZADD")
                    .arg(keys.workers())
                    .arg("XX")
                    .arg(0)
                    .arg("\u{0}ardiq-check"),
            )
            .await?;
        let subscribed = tokio::time::timeout(self.timeout, async {
            let mut pubsub = self.client.get_async_pubsub().await?;
            // Dropped, not unsubscribed: the worker's ACL user has no UNSUBSCRIBE.
            pubsub.subscribe(keys.abort_channel()).await
        })
        .await;
        match subscribed {
            Ok(Ok(())) => {}
            Ok(Err(e)) => return Err(self.err(e)),
            Err(_) => {
                return Err(OpsError::Unreachable {
                    url: self.url.clone(),
                    reason: "subscribing timed out".to_owned(),
                })
            }
        }
        Ok(missing)
    }
}
