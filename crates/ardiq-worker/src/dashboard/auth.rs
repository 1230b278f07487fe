//! Who may use the dashboard, and requests from other sites.
//!
//! * **Token.** With `ARDIQ_DASHBOARD_TOKEN` set, every request needs
//!   `Authorization: Bearer <token>` or the session cookie the login form sets. The
//!   cookie holds `HMAC-SHA256(token, "ardiq-dashboard-session-v1")` in hex, never the
//!   token: a stolen cookie is a session (until the token changes), not the token.
//!   Comparisons are constant-time (each side is first reduced to an HMAC of fixed
//!   length, then compared with `verify_slice`).
//! * **Cross-site requests.** Actions are POSTs carrying the custom header
//!   `X-Ardiq-Action: 1` (a form on another site cannot send one, and a script there
//!   cannot without a CORS preflight this server never grants) and, when the browser
//!   sends an `Origin`, an origin whose host is the request's `Host`.
//! * **DNS rebinding.** Without a token, a page on another site could make its own name
//!   resolve to 127.0.0.1 and then talk to the dashboard as its own origin (the `Origin`
//!   and `Host` would agree). So without a token only requests whose `Host` is an IP
//!   address, `localhost`, or a name given with `--allowed-host` are served. With a
//!   token that page has neither the token nor the cookie (kept for the real origin).

use hmac::{Hmac, Mac};
use hyper::header::{HeaderMap, AUTHORIZATION, COOKIE, HOST, ORIGIN};
use sha2::Sha256;

type HmacSha256 = Hmac<Sha256>;

/// The session cookie's name.
pub const COOKIE_NAME: &str = "ardiq_session";

/// The header every action must carry.
pub const ACTION_HEADER: &str = "x-ardiq-action";

const SESSION_CONTEXT: &[u8] = b"ardiq-dashboard-session-v1";
const BEARER_CONTEXT: &[u8] = b"ardiq-dashboard-bearer-v1";
const COOKIE_CONTEXT: &[u8] = b"ardiq-dashboard-cookie-v1";

/// The token's derived values (the token itself is not kept).
pub struct Auth {
    inner: Option<Keys>,
}

struct Keys {
    /// The key every comparison's HMAC is made with (derived from the token).
    key: Vec<u8>,
    /// `HMAC(key, BEARER_CONTEXT || token)`: what a bearer token must reduce to.
    bearer: Vec<u8>,
    /// The cookie's value, hex.
    session: String,
    /// `HMAC(key, COOKIE_CONTEXT || session)`.
    session_tag: Vec<u8>,
}

fn mac(key: &[u8]) -> HmacSha256 {
    // HMAC takes keys of any length: `new_from_slice` cannot fail.
    <HmacSha256 as Mac>::new_from_slice(key).expect("HMAC accepts any key length")
}

fn tag(key: &[u8], context: &[u8], value: &[u8]) -> Vec<u8> {
    let mut m = mac(key);
    m.update(context);
    m.update(value);
    m.finalize().into_bytes().to_vec()
}

/// `tag(key, context, value) == expected`, in constant time.
fn verify(key: &[u8], context: &[u8], value: &[u8], expected: &[u8]) -> bool {
    let mut m = mac(key);
    m.update(context);
    m.update(value);
    m.verify_slice(expected).is_ok()
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

impl Auth {
    /// No token (or an empty one): no authentication.
    pub fn new(token: Option<&str>) -> Auth {
        let inner = token.filter(|t| !t.is_empty()).map(|token| {
            let session = hex(&tag(token.as_bytes(), SESSION_CONTEXT, b""));
            let key = tag(token.as_bytes(), b"ardiq-dashboard-compare-v1", b"");
            Keys {
                bearer: tag(&key, BEARER_CONTEXT, token.as_bytes()),
                session_tag: tag(&key, COOKIE_CONTEXT, session.as_bytes()),
                session,
                key,
            }
        });
        Auth { inner }
    }

    /// A token is set.
    pub fn required(&self) -> bool {
        self.inner.is_some()
    }

    /// The request carries the token or the session cookie (always true without a token).
    pub fn allows(&self, headers: &HeaderMap) -> bool {
        let Some(k) = &self.inner else {
            return true;
        };
        if let Some(given) = bearer(headers) {
            return verify(&k.key, BEARER_CONTEXT, given.as_bytes(), &k.bearer);
        }
        match cookie(headers, COOKIE_NAME) {
            Some(value) => verify(&k.key, COOKIE_CONTEXT, value.as_bytes(), &k.session_tag),
            None => false,
        }
    }

    /// `token` is the token (constant-time); false without one.
    pub fn is_token(&self, token: &str) -> bool {
        self.inner
            .as_ref()
            .is_some_and(|k| verify(&k.key, BEARER_CONTEXT, token.as_bytes(), &k.bearer))
    }

    /// The `Set-Cookie` value a successful login sends (`None` without a token).
    pub fn session_cookie(&self, secure: bool) -> Option<String> {
        self.inner.as_ref().map(|k| {
            format!(
                "{COOKIE_NAME}={}; HttpOnly; SameSite=Strict; Path=/{}",
                k.session,
                if secure { "; Secure" } else { "" }
            )
        })
    }
}

/// The `Set-Cookie` value that ends a session.
pub fn clear_cookie() -> String {
    format!("{COOKIE_NAME}=; HttpOnly; SameSite=Strict; Path=/; Max-Age=0")
}

/// The token of `Authorization: Bearer <token>`.
fn bearer(headers: &HeaderMap) -> Option<&str> {
    let value = headers.get(AUTHORIZATION)?.to_str().ok()?.trim();
    let (scheme, token) = value.split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
}

/// The value of cookie `name` (the first one), from every `Cookie` header.
fn cookie<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v.trim())
}

/// Why a state-changing request is refused as cross-site.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CrossSite {
    /// No `X-Ardiq-Action: 1`.
    NoActionHeader,
    /// `Origin` names another host (or is `null`, or `Host` is missing).
    OtherOrigin,
}

impl CrossSite {
    pub fn message(self) -> &'static str {
        match self {
            CrossSite::NoActionHeader => "actions need the header `X-Ardiq-Action: 1`",
            CrossSite::OtherOrigin => "the request's Origin is not this server's",
        }
    }
}

/// Checks a request that changes something. `needs_header`: an action of the API (the
/// login and logout forms cannot send custom headers and are checked by origin only).
pub fn same_site(headers: &HeaderMap, needs_header: bool) -> Result<(), CrossSite> {
    if needs_header {
        let ok = headers
            .get(ACTION_HEADER)
            .is_some_and(|v| v.as_bytes() == b"1");
        if !ok {
            return Err(CrossSite::NoActionHeader);
        }
    }
    let Some(origin) = headers.get(ORIGIN) else {
        return Ok(());
    };
    let host = headers.get(HOST).and_then(|h| h.to_str().ok());
    let origin_host = origin.to_str().ok().and_then(|o| {
        o.strip_prefix("http://")
            .or_else(|| o.strip_prefix("https://"))
    });
    match (origin_host, host) {
        (Some(o), Some(h)) if o.trim_end_matches('/').eq_ignore_ascii_case(h.trim()) => Ok(()),
        _ => Err(CrossSite::OtherOrigin),
    }
}

/// The host part of a `Host` header (`[::1]:80` → `::1`, `Example.com:9181` →
/// `example.com`).
fn host_name(host: &str) -> String {
    let host = host.trim();
    let name = if let Some(rest) = host.strip_prefix('[') {
        rest.split(']').next().unwrap_or("")
    } else {
        host.rsplit_once(':').map_or(host, |(h, _)| h)
    };
    name.trim_end_matches('.').to_ascii_lowercase()
}

/// May a request with these headers be served without a token (see the module's "DNS
/// rebinding")? `allowed`: the `--allowed-host` names, lower-case.
pub fn host_allowed(headers: &HeaderMap, allowed: &[String]) -> bool {
    let Some(host) = headers.get(HOST).and_then(|h| h.to_str().ok()) else {
        return false;
    };
    let name = host_name(host);
    name == "localhost" || name.parse::<std::net::IpAddr>().is_ok() || allowed.contains(&name)
}

#[cfg(test)]
mod tests {
    use hyper::header::HeaderValue;

    use super::*;

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(*k, HeaderValue::from_str(v).unwrap());
        }
        h
    }

    #[test]
    fn open_without_a_token() {
        let auth = Auth::new(None);
        assert!(!auth.required() && auth.allows(&HeaderMap::new()));
        assert!(!auth.is_token(""));
        assert!(auth.session_cookie(false).is_none());
        assert!(!Auth::new(Some("")).required());
    }

    #[test]
    fn bearer_token() {
        let auth = Auth::new(Some("s3cret"));
        assert!(auth.required());
        assert!(!auth.allows(&HeaderMap::new()));
        assert!(auth.allows(&headers(&[("authorization", "Bearer s3cret")])));
        assert!(auth.allows(&headers(&[("authorization", "bearer  s3cret ")])));
        assert!(!auth.allows(&headers(&[("authorization", "Bearer s3cre")])));
        assert!(!auth.allows(&headers(&[("authorization", "Bearer s3cret2")])));
        assert!(!auth.allows(&headers(&[("authorization", "Basic s3cret")])));
        assert!(auth.is_token("s3cret") && !auth.is_token("S3cret"));
    }

    #[test]
    fn session_cookie_is_derived_not_the_token() {
        let auth = Auth::new(Some("s3cret"));
        let set = auth.session_cookie(false).unwrap();
        assert!(!set.contains("s3cret"), "{set}");
        for attr in ["HttpOnly", "SameSite=Strict", "Path=/"] {
            assert!(set.contains(attr), "{set}");
        }
        assert!(!set.contains("Secure"));
        assert!(auth.session_cookie(true).unwrap().ends_with("; Secure"));
        let value = set.split(';').next().unwrap(); // "ardiq_session=<hex>"
        assert_eq!(value.len(), COOKIE_NAME.len() + 1 + 64);
        let with = |c: &str| headers(&[("cookie", c)]);
        assert!(auth.allows(&with(&format!("a=1; {value}; b=2"))));
        assert!(!auth.allows(&with("ardiq_session=s3cret")));
        assert!(!auth.allows(&with(&value[..value.len() - 1])));
        // Another token gives another cookie.
        assert!(!Auth::new(Some("other")).allows(&with(value)));
        // A wrong bearer token is not rescued by a good cookie: the bearer decides.
        let both = headers(&[("authorization", "Bearer nope"), ("cookie", value)]);
        assert!(!auth.allows(&both));
        assert!(clear_cookie().contains("Max-Age=0"));
    }

    #[test]
    fn cross_site_requests() {
        let action = [("x-ardiq-action", "1"), ("host", "127.0.0.1:9181")];
        assert_eq!(same_site(&headers(&action), true), Ok(()));
        assert_eq!(
            same_site(&headers(&[("host", "h")]), true),
            Err(CrossSite::NoActionHeader)
        );
        assert_eq!(
            same_site(&headers(&[("x-ardiq-action", "yes")]), true),
            Err(CrossSite::NoActionHeader)
        );
        let with_origin = |o: &str| {
            let mut h = headers(&action);
            h.insert(ORIGIN, HeaderValue::from_str(o).unwrap());
            same_site(&h, true)
        };
        assert_eq!(with_origin("http://127.0.0.1:9181"), Ok(()));
        assert_eq!(with_origin("https://127.0.0.1:9181"), Ok(()));
        assert_eq!(
            with_origin("http://evil.example"),
            Err(CrossSite::OtherOrigin)
        );
        assert_eq!(
            with_origin("http://127.0.0.1:9182"),
            Err(CrossSite::OtherOrigin)
        );
        assert_eq!(with_origin("null"), Err(CrossSite::OtherOrigin));
        // Forms (login) carry no custom header: origin only.
        assert_eq!(same_site(&headers(&[("host", "h")]), false), Ok(()));
        let form = headers(&[("host", "h"), ("origin", "http://x")]);
        assert_eq!(same_site(&form, false), Err(CrossSite::OtherOrigin));
    }

    #[test]
    fn hosts_served_without_a_token() {
        let allowed = ["dash.example.com".to_owned()];
        let ok = |host: &str| host_allowed(&headers(&[("host", host)]), &allowed);
        for host in [
            "127.0.0.1:9181",
            "localhost:9181",
            "LOCALHOST",
            "[::1]:9181",
            "10.0.0.7",
            "dash.example.com",
            "Dash.Example.com.:443",
        ] {
            assert!(ok(host), "{host}");
        }
        for host in [
            "evil.example:9181",
            "127.0.0.1.evil.example",
            "localhost.evil",
            "",
        ] {
            assert!(!ok(host), "{host}");
        }
        assert!(!host_allowed(&HeaderMap::new(), &allowed));
    }
}
