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
        let client = open_client(url).map_err(|reason| EngineError::Url {
            url: masked_url.clone(),
            reason,
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
            // A server that wants a password answers a connection without one only at
            // its first command (NOAUTH): ask once, so that fails here, not in every loop.
            let connected = match self.manager().await {
                Ok(mut conn) => redis::cmd("PING")
                    .query_async::<()>(&mut conn)
                    .await
                    .map(|()| conn),
                Err(e) => Err(e),
            };
            match connected {
                Ok(conn) => {
                    if throttle.success() {
                        info!(url = %self.masked_url, "connected to redis");
                    }
                    return Ok(Some(conn));
                }
                Err(e) if is_tls_error(&e) => {
                    return Err(EngineError::Tls {
                        url: self.masked_url.clone(),
                        reason: e.to_string(),
                    });
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

/// The client for `url`, with the TLS settings its query carries (see [`split_tls`]).
/// The error is one line that never quotes the password.
pub(crate) fn open_client(url: &str) -> std::result::Result<Client, String> {
    let masked = mask_url(url);
    // The library's message can quote the URL: mask anything that looks like it.
    let hide = |e: RedisError| e.to_string().replace(url, &masked);
    let (url, tls) = split_tls(url)?;
    match tls {
        None => Client::open(url.as_str()).map_err(hide),
        Some(tls) => tls_client(&url, tls).map_err(|e| e.replace(url.as_str(), &masked)),
    }
}

/// TLS settings given as `rediss://` URL query parameters, named as redis-py names them
/// so one URL serves producers and workers alike.
#[derive(Debug, Default, PartialEq, Eq)]
pub(crate) struct TlsParams {
    /// `ssl_ca_certs`: a PEM file of the CAs to trust instead of the built-in roots.
    pub ca_certs: Option<String>,
    /// `ssl_certfile` and `ssl_keyfile`: a client certificate (PEM) and its key.
    pub certfile: Option<String>,
    pub keyfile: Option<String>,
}

/// Removes the `ssl_*` parameters from the URL's query and returns them. Certificate
/// verification cannot be turned off here: `ssl_cert_reqs` other than `required` and
/// `ssl_check_hostname=false` are refused, as are `ssl_*` parameters the engine does not
/// know and TLS parameters on a URL that is not `rediss://`.
pub(crate) fn split_tls(url: &str) -> std::result::Result<(String, Option<TlsParams>), String> {
    let (head, fragment) = match url.find('#') {
        Some(i) => (&url[..i], &url[i..]),
        None => (url, ""),
    };
    let Some((base, query)) = head.split_once('?') else {
        return Ok((url.to_owned(), None));
    };
    let mut kept = Vec::new();
    let mut tls = TlsParams::default();
    let mut any = false;
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        if !key.starts_with("ssl_") {
            kept.push(pair);
            continue;
        }
        any = true;
        let value = percent_decode(value);
        match key {
            "ssl_ca_certs" => tls.ca_certs = Some(value),
            "ssl_certfile" => tls.certfile = Some(value),
            "ssl_keyfile" => tls.keyfile = Some(value),
            "ssl_cert_reqs" if value.eq_ignore_ascii_case("required") => {}
            "ssl_check_hostname" if matches!(value.as_str(), "true" | "True" | "1") => {}
            "ssl_cert_reqs" | "ssl_check_hostname" => {
                return Err(format!(
                    "`{key}={value}`: the native worker always verifies the server's \
                     certificate and host name; trust a private CA with `ssl_ca_certs=PATH`"
                ))
            }
            _ => {
                return Err(format!(
                    "unsupported TLS parameter `{key}` (the native worker takes \
                     ssl_ca_certs, ssl_certfile and ssl_keyfile)"
                ))
            }
        }
    }
    if !any {
        return Ok((url.to_owned(), None));
    }
    if !(url.starts_with("rediss://") || url.starts_with("valkeys://")) {
        return Err("TLS parameters (`ssl_*`) need a `rediss://` URL".to_owned());
    }
    if tls.certfile.is_some() != tls.keyfile.is_some() {
        return Err("`ssl_certfile` and `ssl_keyfile` go together".to_owned());
    }
    let rest = if kept.is_empty() {
        String::new()
    } else {
        format!("?{}", kept.join("&"))
    };
    Ok((format!("{base}{rest}{fragment}"), Some(tls)))
}

/// `%2F` and friends in a query value (a path); invalid escapes stay as they are.
fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = |b: u8| (b as char).to_digit(16);
        match bytes[i] {
            b'%' if i + 2 < bytes.len() => match (hex(bytes[i + 1]), hex(bytes[i + 2])) {
                (Some(h), Some(l)) => {
                    out.push((h * 16 + l) as u8);
                    i += 3;
                    continue;
                }
                _ => out.push(b'%'),
            },
            b'+' => out.push(b' '),
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(feature = "tls")]
fn tls_client(url: &str, tls: TlsParams) -> std::result::Result<Client, String> {
    let read = |what: &str, path: &str| {
        std::fs::read(path).map_err(|e| format!("cannot read {what} `{path}`: {e}"))
    };
    let root_cert = match &tls.ca_certs {
        Some(path) => Some(read("ssl_ca_certs", path)?),
        None => None,
    };
    let client_tls = match (&tls.certfile, &tls.keyfile) {
        (Some(cert), Some(key)) => Some(redis::ClientTlsConfig {
            client_cert: read("ssl_certfile", cert)?,
            client_key: read("ssl_keyfile", key)?,
        }),
        _ => None,
    };
    Client::build_with_tls(
        url,
        redis::TlsCertificates {
            client_tls,
            root_cert,
        },
    )
    .map_err(|e| e.to_string())
}

#[cfg(not(feature = "tls"))]
fn tls_client(_url: &str, _tls: TlsParams) -> std::result::Result<Client, String> {
    Err("this build has no TLS support (the `tls` feature of ardiq-core)".to_owned())
}

/// The server's certificate was not accepted (unknown CA, wrong host name, expired):
/// retrying cannot help until the settings change.
pub fn is_tls_error(e: &RedisError) -> bool {
    let text = e.to_string();
    text.contains("invalid peer certificate")
        || text.contains("certificate")
            && (text.contains("UnknownIssuer")
                || text.contains("NotValidForName")
                || text.contains("Expired"))
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tls_parameters_leave_the_url() {
        let (url, tls) =
            split_tls("rediss://u:p@h:1/0?ssl_ca_certs=%2Ftmp%2Fca.pem&protocol=resp2").unwrap();
        assert_eq!(url, "rediss://u:p@h:1/0?protocol=resp2");
        let tls = tls.unwrap();
        assert_eq!(tls.ca_certs.as_deref(), Some("/tmp/ca.pem"));
        let (url, tls) =
            split_tls("rediss://h/?ssl_certfile=c.pem&ssl_keyfile=k.pem&ssl_cert_reqs=required")
                .unwrap();
        assert_eq!(url, "rediss://h/");
        assert_eq!(tls.unwrap().keyfile.as_deref(), Some("k.pem"));
        // Nothing to do: the URL is untouched.
        assert_eq!(
            split_tls("redis://h:1/2?protocol=resp3").unwrap(),
            ("redis://h:1/2?protocol=resp3".to_owned(), None)
        );
    }

    #[test]
    fn verification_cannot_be_turned_off() {
        for bad in [
            "rediss://h?ssl_cert_reqs=none",
            "rediss://h?ssl_check_hostname=false",
            "rediss://h?ssl_password=x",
            "redis://h?ssl_ca_certs=/ca.pem",
            "rediss://h?ssl_certfile=c.pem",
        ] {
            assert!(split_tls(bad).is_err(), "{bad}");
        }
        let err = open_client("rediss://u:hunter2@h?ssl_ca_certs=/nonexistent/ca.pem")
            .err()
            .unwrap();
        assert!(!err.contains("hunter2"), "{err}");
    }
}
