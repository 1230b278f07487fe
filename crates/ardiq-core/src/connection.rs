//! Connections to Redis, and how the engine gets (back) to it.
//!
//! Three kinds, each for a reason:
//! * one multiplexed [`ConnectionManager`] for every script and plain command, with a
//!   response timeout (a wedged server becomes an error and a retry, not a hung loop) and
//!   automatic reconnects;
//! * one dedicated connection for the blocking `XREADGROUP ... BLOCK`, without a
//!   response timeout (the server legitimately stays silent for `poll_block_ms`) so it
//!   never delays the multiplexed commands queued behind it; the reader bounds it itself;
//! * one pub/sub connection for `P abort` (a subscribed connection can do nothing else).

use std::time::Duration;

use redis::aio::{ConnectionManager, ConnectionManagerConfig, MultiplexedConnection, PubSub};
use redis::{AsyncConnectionConfig, Client, ErrorKind, RedisError};
use tokio::sync::watch;
use tracing::{info, warn};

use crate::backoff::{Backoff, LogThrottle};
use crate::config::mask_url;
use crate::error::{EngineError, Result};
use crate::shutdown::StopLevel;

/// The client plus the settings every connection of this engine shares.
#[derive(Clone)]
pub struct Redis {
    client: Client,
    masked_url: String,
    command_timeout: Duration,
}

impl Redis {
    /// Parses the URL. Nothing connects yet.
    pub fn open(url: &str, command_timeout: Duration) -> Result<Self> {
        let masked_url = mask_url(url);
        let client = Client::open(url).map_err(|e| EngineError::Url {
            url: masked_url.clone(),
            // The library's message can quote the URL: mask anything that looks like it.
            reason: e.to_string().replace(url, &masked_url),
        })?;
        Ok(Redis {
            client,
            masked_url,
            command_timeout,
        })
    }

    /// The URL with its password masked, for log lines.
    pub fn masked_url(&self) -> &str {
        &self.masked_url
    }

    /// The shared, self-reconnecting connection for scripts and plain commands.
    pub async fn manager(&self) -> Result<ConnectionManager, RedisError> {
        let config = ConnectionManagerConfig::new()
            .set_response_timeout(Some(self.command_timeout))
            .set_connection_timeout(Some(self.command_timeout))
            // Few quick internal retries: the engine's own loops back off and log, so the
            // manager should report a dead server promptly rather than hide it.
            .set_number_of_retries(2)
            .set_min_delay(Duration::from_millis(50))
            .set_max_delay(Duration::from_secs(1));
        self.client.get_connection_manager_with_config(config).await
    }

    /// A dedicated connection for blocking reads: no response timeout.
    pub async fn blocking(&self) -> Result<MultiplexedConnection, RedisError> {
        let config = AsyncConnectionConfig::new()
            .set_connection_timeout(Some(self.command_timeout))
            .set_response_timeout(None);
        self.client
            .get_multiplexed_async_connection_with_config(&config)
            .await
    }

    /// A pub/sub connection (bounded by the command timeout while connecting).
    pub async fn pubsub(&self) -> Result<PubSub, RedisError> {
        match tokio::time::timeout(self.command_timeout, self.client.get_async_pubsub()).await {
            Ok(r) => r,
            Err(_) => Err(RedisError::from((
                ErrorKind::Io,
                "pub/sub connect timed out",
            ))),
        }
    }

    /// Connects the shared connection, retrying with backoff while Redis is unreachable
    /// and logging once per interval. Returns `Ok(None)` if a stop arrives first, and an
    /// error only for what retrying cannot fix (bad credentials).
    pub async fn connect_with_retry(
        &self,
        stop: &mut watch::Receiver<StopLevel>,
    ) -> Result<Option<ConnectionManager>> {
        let mut backoff = Backoff::redis();
        let mut throttle = LogThrottle::default();
        loop {
            match self.manager().await {
                Ok(conn) => {
                    if throttle.success() {
                        info!(url = %self.masked_url, "connected to redis");
                    }
                    return Ok(Some(conn));
                }
                Err(e) if is_auth_error(&e) => {
                    return Err(EngineError::Auth {
                        url: self.masked_url.clone(),
                        reason: e.to_string(),
                    });
                }
                Err(e) => {
                    if let Some(suppressed) = throttle.failure() {
                        warn!(url = %self.masked_url, error = %e, suppressed,
                            "redis unreachable, retrying");
                    }
                }
            }
            let delay = backoff.next_delay();
            tokio::select! {
                _ = tokio::time::sleep(delay) => {}
                _ = stop.wait_for(|l| *l != StopLevel::Running) => return Ok(None),
            }
        }
    }
}

/// Bad credentials or missing auth: retrying will not help.
pub fn is_auth_error(e: &RedisError) -> bool {
    e.kind() == ErrorKind::AuthenticationFailed
        || matches!(e.code(), Some("WRONGPASS" | "NOAUTH" | "NOPERM"))
}

/// The consumer group (or the stream) is missing: Redis lost its data, or nobody
/// created the group yet. `fetch` recreates it.
pub fn is_nogroup(e: &RedisError) -> bool {
    e.code() == Some("NOGROUP") || e.to_string().contains("NOGROUP")
}

/// Worth retrying as is: the connection or the server is in trouble for now. Anything
/// else (a script error, a wrong key type) would fail the same way again.
pub fn is_transient(e: &RedisError) -> bool {
    e.is_io_error()
        || e.is_timeout()
        || e.is_connection_dropped()
        || e.is_connection_refusal()
        || matches!(
            e.code(),
            Some(
                "LOADING"
                    | "BUSY"
                    | "TRYAGAIN"
                    | "CLUSTERDOWN"
                    | "MASTERDOWN"
                    | "READONLY"
                    | "OOM"
                    | "NOSCRIPT"
            )
        )
}
