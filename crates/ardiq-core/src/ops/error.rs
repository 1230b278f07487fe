//! Why a tool could not do its job, and how a Redis error is sorted into those kinds.

use redis::RedisError;
use thiserror::Error;

use crate::connection::is_auth_error;

/// Why a tool could not do its job. Each kind maps to its own exit code in the binary.
#[derive(Debug, Error)]
pub enum OpsError {
    /// The URL does not parse. Never contains the password.
    #[error("invalid redis url `{url}`: {reason}")]
    Url {
        /// The URL with any password masked.
        url: String,
        /// What the client library said.
        reason: String,
    },
    /// Nothing answered (refused, timed out, name not resolved).
    #[error("redis at `{url}` is unreachable: {reason}")]
    Unreachable {
        /// The URL with any password masked.
        url: String,
        /// What went wrong.
        reason: String,
    },
    /// Redis answered but refused: bad credentials, or the ACL user lacks a permission.
    #[error("redis at `{url}` refused: {reason}")]
    Denied {
        /// The URL with any password masked.
        url: String,
        /// What the server said.
        reason: String,
    },
    /// Any other failed command.
    #[error("redis: {0}")]
    Redis(String),
}

fn is_denied(e: &RedisError) -> bool {
    is_auth_error(e) || e.to_string().contains("NOPERM")
}

pub(super) fn classify(url: &str, e: RedisError) -> OpsError {
    let reason = e.to_string();
    if is_denied(&e) {
        OpsError::Denied {
            url: url.to_owned(),
            reason,
        }
    } else if e.is_io_error()
        || e.is_timeout()
        || e.is_connection_dropped()
        || e.is_connection_refusal()
    {
        OpsError::Unreachable {
            url: url.to_owned(),
            reason,
        }
    } else {
        OpsError::Redis(reason)
    }
}
