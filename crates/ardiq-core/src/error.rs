//! The engine's error type: what can cross the boundary between the engine and its caller.

use thiserror::Error;

/// Why [`crate::Engine::run`] could not serve the queue.
///
/// Transient Redis trouble (refused connections, timeouts, a restarted server) never shows
/// up here: the engine retries those with backoff for as long as it runs. Only problems
/// that retrying cannot fix end the run.
#[derive(Debug, Error)]
pub enum EngineError {
    /// The configuration cannot work (empty queue name, no lanes, zero concurrency, ...).
    #[error("invalid configuration: {0}")]
    Config(String),

    /// The Redis URL could not be parsed. The message never contains the password.
    #[error("invalid redis url `{url}`: {reason}")]
    Url {
        /// The URL with any password masked.
        url: String,
        /// What the client library said about it.
        reason: String,
    },

    /// Redis refused our credentials: retrying with the same ones cannot help.
    #[error("redis at `{url}` refused the credentials: {reason}")]
    Auth {
        /// The URL with any password masked.
        url: String,
        /// What the server said.
        reason: String,
    },

    /// The TLS handshake failed on the server's certificate (unknown CA, wrong host
    /// name, expired): retrying cannot help until the settings change.
    #[error(
        "redis at `{url}` presented a certificate that is not trusted: {reason} \
         (trust its CA with `?ssl_ca_certs=PATH` on the rediss:// URL)"
    )]
    Tls {
        /// The URL with any password masked.
        url: String,
        /// What the TLS library said.
        reason: String,
    },

    /// A Lua script returned something its header does not allow: the scripts and the
    /// engine disagree about the protocol (a version mismatch, or a bug).
    #[error("script `{script}` returned an unexpected reply: {detail}")]
    Protocol {
        /// The script's name (`fetch`, `finish`, ...).
        script: &'static str,
        /// What was wrong with the reply.
        detail: String,
    },

    /// A Redis command failed. Used inside the engine between retries; `run` only returns
    /// it for failures that retrying cannot fix.
    #[error("redis: {0}")]
    Redis(#[from] redis::RedisError),
}

/// Shorthand used throughout the crate.
pub type Result<T, E = EngineError> = std::result::Result<T, E>;
