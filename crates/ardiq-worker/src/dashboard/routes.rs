//! The dashboard's routes, relative to the server root (the page uses relative URLs, so a
//! proxy may serve it under any path prefix it strips):
//!
//! * `GET /` (`index.html`) and every embedded file by name (`assets`);
//! * `GET login` (the login page), `POST login` (form field `token`; sets the session
//!   cookie), `POST logout`;
//! * `GET api/...` reads (`api`) and `POST api/...` actions (`actions`).
//!
//! In order: without a token, a `Host` that is not served (421, see `auth`); the route is
//! found (404), the method checked (405), authentication (401;
//! a browser asking for a page is sent to `login` instead), then for POSTs the cross-site
//! checks (403) and `--read-only` (403). Every response carries the security headers
//! (`reply::secure`).

use std::sync::Arc;

use ardiq_core::Keys;
use http_body_util::{BodyExt, Limited};
use hyper::body::Incoming;
use hyper::header::{HeaderValue, ACCEPT, ALLOW, SET_COOKIE};
use hyper::{Method, Request, Response, StatusCode};
use serde_json::json;

use super::assets;
use super::auth::{self, Auth};
use super::catalog::Catalog;
use super::params::{self, Query};
use super::reply::{self, ApiError};
use super::{actions, api};
use crate::http::{Body, Handler};

/// The largest request body read (the login form).
const MAX_BODY: usize = 4096;

/// The dashboard: one value serves every connection.
pub struct Dashboard {
    pub catalog: Arc<Catalog>,
    pub auth: Auth,
    pub read_only: bool,
    /// Names served without a token besides IP addresses and `localhost`.
    pub allowed_hosts: Vec<String>,
}

/// What a path names.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Route {
    Asset(&'static assets::Asset),
    Login,
    Logout,
    /// `api/` and the segments after it.
    Api(Vec<String>),
    NotFound,
}

impl Route {
    fn of(path: &str) -> Route {
        let Some(segments) = params::segments(path) else {
            return Route::NotFound;
        };
        match segments.first().map(String::as_str) {
            None => assets::find(assets::INDEX).map_or(Route::NotFound, Route::Asset),
            Some("login") if segments.len() == 1 => Route::Login,
            Some("logout") if segments.len() == 1 => Route::Logout,
            Some("api") => Route::Api(segments[1..].to_vec()),
            Some(_) => assets::find(&segments.join("/")).map_or(Route::NotFound, Route::Asset),
        }
    }

    /// Served without authentication.
    fn public(&self) -> bool {
        match self {
            Route::Asset(a) => a.public,
            Route::Login | Route::NotFound => true,
            Route::Logout | Route::Api(_) => false,
        }
    }
}

impl Handler for Dashboard {
    async fn handle(&self, request: Request<Incoming>) -> Response<Body> {
        reply::secure(self.answer(request).await)
    }
}

fn method_not_allowed(allow: &'static str) -> Response<Body> {
    let mut r =
        ApiError::new(StatusCode::METHOD_NOT_ALLOWED, format!("only {allow} here")).response();
    r.headers_mut()
        .insert(ALLOW, HeaderValue::from_static(allow));
    r
}

/// A browser navigating to a page (rather than a script or tool asking for data).
fn wants_html(request: &Request<Incoming>) -> bool {
    request
        .headers()
        .get(ACCEPT)
        .and_then(|a| a.to_str().ok())
        .is_some_and(|a| a.contains("text/html"))
}

impl Dashboard {
    async fn answer(&self, request: Request<Incoming>) -> Response<Body> {
        let route = Route::of(request.uri().path());
        let method = request.method().clone();
        let read = method == Method::GET || method == Method::HEAD;
        if !self.auth.required() && !auth::host_allowed(request.headers(), &self.allowed_hosts) {
            return ApiError::new(
                StatusCode::MISDIRECTED_REQUEST,
                "this Host is not served without a token: pass it with --allowed-host, \
                 or set ARDIQ_DASHBOARD_TOKEN",
            )
            .response();
        }
        if !route.public() && !self.auth.allows(request.headers()) {
            if read && wants_html(&request) && !matches!(route, Route::Api(_)) {
                return reply::see_other("login");
            }
            return ApiError::new(StatusCode::UNAUTHORIZED, "a token is needed").response();
        }
        match route {
            Route::NotFound => ApiError::not_found("no such page").response(),
            Route::Asset(a) if read => reply::file(assets::content_type(a.name), a.bytes),
            Route::Asset(_) => method_not_allowed("GET, HEAD"),
            Route::Login if read => match assets::find(assets::LOGIN) {
                Some(a) => reply::file(assets::content_type(a.name), a.bytes),
                None => ApiError::not_found("no login page").response(),
            },
            Route::Login if method == Method::POST => self.login(request).await,
            Route::Login => method_not_allowed("GET, HEAD, POST"),
            Route::Logout if method == Method::POST => {
                if let Err(why) = auth::same_site(request.headers(), false) {
                    return ApiError::new(StatusCode::FORBIDDEN, why.message()).response();
                }
                let mut r = reply::see_other("login");
                if let Ok(v) = HeaderValue::from_str(&auth::clear_cookie()) {
                    r.headers_mut().insert(SET_COOKIE, v);
                }
                r
            }
            Route::Logout => method_not_allowed("POST"),
            Route::Api(segments) => self.api(request, &segments).await,
        }
    }

    /// `POST login`: form field `token` (urlencoded). Right: the session cookie and back
    /// to the page; wrong: back to `login?failed=1` (a script asking for JSON gets 200 or
    /// 401 instead).
    async fn login(&self, request: Request<Incoming>) -> Response<Body> {
        if let Err(why) = auth::same_site(request.headers(), false) {
            return ApiError::new(StatusCode::FORBIDDEN, why.message()).response();
        }
        if !self.auth.required() {
            return reply::see_other("./");
        }
        let secure = request
            .headers()
            .get("x-forwarded-proto")
            .is_some_and(|p| p.as_bytes().eq_ignore_ascii_case(b"https"));
        let html = wants_html(&request);
        let body = match Limited::new(request.into_body(), MAX_BODY).collect().await {
            Ok(b) => b.to_bytes(),
            Err(_) => {
                return ApiError::new(StatusCode::PAYLOAD_TOO_LARGE, "the form is too large")
                    .response()
            }
        };
        let form = Query::parse(std::str::from_utf8(&body).ok());
        let token = form.as_ref().ok().and_then(|f| f.get("token"));
        let ok = token.is_some_and(|t| self.auth.is_token(t));
        let mut response = match (ok, html) {
            (true, true) => reply::see_other("./"),
            (false, true) => reply::see_other("login?failed=1"),
            (true, false) => reply::json_response(StatusCode::OK, &json!({ "ok": true })),
            (false, false) => ApiError::new(StatusCode::UNAUTHORIZED, "wrong token").response(),
        };
        if ok {
            if let Some(v) = self
                .auth
                .session_cookie(secure)
                .and_then(|c| HeaderValue::from_str(&c).ok())
            {
                response.headers_mut().insert(SET_COOKIE, v);
            }
        }
        response
    }

    async fn api(&self, request: Request<Incoming>, segments: &[String]) -> Response<Body> {
        let method = request.method().clone();
        let query = match Query::parse(request.uri().query()) {
            Ok(q) => q,
            Err(e) => return e.response(),
        };
        let seg: Vec<&str> = segments.iter().map(String::as_str).collect();
        let is_action = matches!(
            seg.as_slice(),
            ["queues", _, "scheduled", _, "run"]
                | ["queues", _, "dead", _, "replay" | "delete"]
                | ["queues", _, "purge" | "pause" | "resume"]
                | ["queues", _, "crons", _, "pause" | "resume" | "trigger"]
        );
        if is_action {
            if method != Method::POST {
                return method_not_allowed("POST");
            }
            if let Err(why) = auth::same_site(request.headers(), true) {
                return ApiError::new(StatusCode::FORBIDDEN, why.message()).response();
            }
            if self.read_only {
                return ApiError::new(
                    StatusCode::FORBIDDEN,
                    "the dashboard is read-only (--read-only)",
                )
                .response();
            }
        } else if method != Method::GET && method != Method::HEAD {
            return method_not_allowed("GET, HEAD");
        }
        match self.dispatch(&seg, &query).await {
            Ok((status, doc)) => reply::json_response(status, &doc),
            Err(e) => e.response(),
        }
    }

    async fn dispatch(
        &self,
        seg: &[&str],
        q: &Query,
    ) -> Result<(StatusCode, serde_json::Value), ApiError> {
        let ok = |doc| Ok((StatusCode::OK, doc));
        let catalog = &self.catalog;
        if seg == ["config"] {
            return ok(api::config(catalog, self.read_only, self.auth.required()));
        }
        let mut client = catalog.client().await.map_err(|e| {
            catalog.forget();
            ApiError::from(e)
        })?;
        let result = self.by_path(&mut client, seg, q).await;
        if result
            .as_ref()
            .is_err_and(|e| e.status == StatusCode::SERVICE_UNAVAILABLE)
        {
            // Redis did not answer: connect again on the next request.
            catalog.forget();
        }
        result
    }

    async fn by_path(
        &self,
        client: &mut ardiq_core::ops::Client,
        seg: &[&str],
        q: &Query,
    ) -> Result<(StatusCode, serde_json::Value), ApiError> {
        match seg {
            ["queues"] => Ok((StatusCode::OK, api::queues(&self.catalog, client).await?)),
            ["queues", name, rest @ ..] => {
                let keys = self.keys(name)?;
                self.queue_route(client, &keys, rest, q).await
            }
            _ => Err(ApiError::not_found("no such API route")),
        }
    }

    fn keys(&self, name: &str) -> Result<Keys, ApiError> {
        self.catalog
            .keys(name)
            .ok_or_else(|| ApiError::not_found(format!("no queue `{name}` is shown here")))
    }

    async fn queue_route(
        &self,
        client: &mut ardiq_core::ops::Client,
        keys: &Keys,
        rest: &[&str],
        q: &Query,
    ) -> Result<(StatusCode, serde_json::Value), ApiError> {
        let ok = |doc| Ok((StatusCode::OK, doc));
        match rest {
            ["stats"] => ok(api::stats(client, keys, q).await?),
            ["workers"] => ok(api::workers(client, keys, q).await?),
            ["history"] => ok(api::history(client, keys, q).await?),
            ["jobs", id] => {
                let (found, doc) = api::job(client, keys, id, q).await?;
                let status = if found {
                    StatusCode::OK
                } else {
                    StatusCode::NOT_FOUND
                };
                Ok((status, doc))
            }
            ["scheduled"] => ok(api::scheduled(client, keys, q).await?),
            ["scheduled", id, "run"] => actions::run_now(client, keys, id).await,
            ["dead"] => ok(api::dead(client, keys, q).await?),
            ["dead", id, "replay"] => actions::dead_letter(client, keys, id, true).await,
            ["dead", id, "delete"] => actions::dead_letter(client, keys, id, false).await,
            ["crons"] => ok(api::crons(client, keys, self.catalog.app_crons(keys.queue())).await?),
            ["crons", name, action @ ("pause" | "resume" | "trigger")] => {
                let app = self.catalog.app_for(keys.queue());
                actions::cron(client, keys, app, name, action).await
            }
            ["purge"] => actions::purge(client, keys, q, self.catalog.app_result_ttl_ms()).await,
            ["pause"] => actions::pause(client, keys, q, true).await,
            ["resume"] => actions::pause(client, keys, q, false).await,
            _ => Err(ApiError::not_found("no such API route")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes() {
        assert!(matches!(Route::of("/"), Route::Asset(a) if a.name == "index.html"));
        assert!(matches!(Route::of("/app.js"), Route::Asset(a) if a.name == "app.js"));
        assert_eq!(Route::of("/login"), Route::Login);
        assert_eq!(Route::of("/logout"), Route::Logout);
        assert_eq!(
            Route::of("/api/queues/a%2Fb/jobs/x"),
            Route::Api(vec![
                "queues".into(),
                "a/b".into(),
                "jobs".into(),
                "x".into()
            ])
        );
        assert_eq!(Route::of("/api"), Route::Api(vec![]));
        assert_eq!(Route::of("/nope.js"), Route::NotFound);
        assert_eq!(Route::of("/../Cargo.toml"), Route::NotFound);
        assert_eq!(Route::of("/%zz"), Route::NotFound);
        assert_eq!(Route::of("/login/x"), Route::NotFound);
    }

    #[test]
    fn what_needs_a_token() {
        assert!(!Route::of("/").public());
        assert!(!Route::of("/app.js").public());
        assert!(!Route::of("/api/config").public());
        assert!(!Route::of("/logout").public());
        assert!(Route::of("/login").public());
        assert!(Route::of("/login.html").public());
    }
}
