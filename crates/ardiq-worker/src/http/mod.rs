//! The binary's one HTTP stack: hyper's HTTP/1.1 server under a small accept loop of our
//! own. Today it serves the health endpoint (`health/`); anything else the binary serves
//! later (a dashboard) plugs in the same way, as a [`Handler`].
//!
//! * `server`: the accept loop (connection cap, header and idle timeouts, the answer
//!   timeout, graceful shutdown) and the [`Handler`] contract;
//! * `write_timeout`: ends a connection whose client takes none of the answer;
//! * `throttle`: keeps a warning that may repeat in a storm to one line per interval;
//! * `response`: building plain-text responses.

mod response;
mod server;
mod throttle;
mod write_timeout;

pub use response::{text, Body};
pub use server::{Handler, Limits, Server};
