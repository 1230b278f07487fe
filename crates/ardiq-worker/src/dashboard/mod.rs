//! `ardiq dashboard`: a web page and its JSON API, served from the binary on the HTTP
//! stack of `crate::http`. One job per file:
//!
//! * `routes`: the [`Dashboard`] handler: which path is what, in which order the checks
//!   run;
//! * `auth`: the token, the session cookie, the cross-site checks;
//! * `api`: the reads (`GET api/...`), `actions`: the changes (`POST api/...`);
//! * `args`: a task's arguments decoded from msgpack in Rust;
//! * `catalog`: the queues shown and the Redis connection;
//! * `params`: paths and query parameters (paging limits);
//! * `reply`: JSON responses and the security headers;
//! * `assets`: the page's files, embedded from `crates/ardiq-worker/dashboard/`.

mod actions;
mod api;
mod args;
mod assets;
mod auth;
mod catalog;
mod params;
mod reply;
mod routes;

pub use auth::Auth;
pub use catalog::{AppInfo, Catalog, Given};
pub use routes::Dashboard;
