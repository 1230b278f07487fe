//! The connection a tool holds: connecting with a timeout on everything, and the one
//! place commands go through (so every error is sorted the same way, see `error`).

use std::time::Duration;

use redis::aio::MultiplexedConnection;
use redis::{AsyncConnectionConfig, Client as RedisClient, RedisError};

use super::error::{classify, OpsError};
use crate::config::mask_url;

/// One connection for a tool, with a timeout on everything. Its methods live beside what
/// they read or change: `discover`, `stats`, `dead`, `purge`, `job`, `functions`, `check`.
pub struct Client {
    pub(super) client: RedisClient,
    pub(super) conn: MultiplexedConnection,
    pub(super) url: String,
    pub(super) timeout: Duration,
}

impl Client {
    /// Connects (and authenticates) within `timeout`.
    pub async fn connect(url: &str, timeout: Duration) -> Result<Client, OpsError> {
        let masked = mask_url(url);
        // The same URL reading as the engine's (TLS parameters included).
        let client = crate::connection::open_client(url).map_err(|reason| OpsError::Url {
            url: masked.clone(),
            reason,
        })?;
        let config = AsyncConnectionConfig::new()
            .set_connection_timeout(Some(timeout))
            .set_response_timeout(Some(timeout));
        let conn = client
            .get_multiplexed_async_connection_with_config(&config)
            .await
            .map_err(|e| classify(&masked, e))?;
        Ok(Client {
            client,
            conn,
            url: masked,
            timeout,
        })
    }

    /// The URL with its password masked.
    pub fn masked_url(&self) -> &str {
        &self.url
    }

    pub(super) fn err(&self, e: RedisError) -> OpsError {
        classify(&self.url, e)
    }

    pub(super) async fn query<T: redis::FromRedisValue>(
        &mut self,
        cmd: &redis::Cmd,
    ) -> Result<T, OpsError> {
        match cmd.query_async(&mut self.conn).await {
            Ok(v) => Ok(v),
            Err(e) => Err(self.err(e)),
        }
    }

    /// The server's clock, epoch ms.
    pub async fn server_ms(&mut self) -> Result<i64, OpsError> {
        let (secs, micros): (i64, i64) = self.query(&redis::cmd("TIME")).await?;
        Ok(secs * 1000 + micros / 1000)
    }

    /// `PING`.
    pub async fn ping(&mut self) -> Result<(), OpsError> {
        let _: String = self.query(&redis::cmd("PING")).await?;
        Ok(())
    }
}
