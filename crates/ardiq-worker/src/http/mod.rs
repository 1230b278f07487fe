//! The binary's one HTTP stack: hyper's HTTP/1.1 server under a small accept loop of our
//! own. Today it serves the health endpoint (`health/`); anything else the binary serves
//! later (a dashboard) plugs in the same way, as a [`Handler`].
//!
//! * `server`: the accept loop (connection cap, header and idle timeouts, graceful
//!   shutdown) and the [`Handler`] contract;
//! * `throttle`: keeps a warning that may repeat in a storm to one line per interval;
//! * `response`: building plain-text responses.

mod response;
mod server;
mod throttle;

pub use response::{text, Body};
pub use server::{Handler, Limits, Server};
