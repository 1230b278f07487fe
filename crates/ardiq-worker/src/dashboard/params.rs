//! Reading a request's path and query: percent-decoding, and the paging parameters every
//! list shares (`limit` at most [`MAX_LIMIT`], `offset`, cursors). A bad value is a
//! `400` naming the parameter, never a default silently used instead.

use super::reply::ApiError;

/// The most items one page may ask for.
pub const MAX_LIMIT: usize = 500;

/// Items per page when `limit` is not given.
pub const DEFAULT_LIMIT: usize = 50;

/// `%XX` sequences decoded (and `+` as a space when `plus` is set, as in a query); `None`
/// when a sequence is malformed or the result is not UTF-8.
pub fn decode(s: &str, plus: bool) -> Option<String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' => {
                let hex = bytes.get(i + 1..i + 3)?;
                let hex = std::str::from_utf8(hex).ok()?;
                out.push(u8::from_str_radix(hex, 16).ok()?);
                i += 3;
            }
            b'+' if plus => {
                out.push(b' ');
                i += 1;
            }
            b => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8(out).ok()
}

/// A path split at `/` (leading and trailing ones ignored), each segment decoded.
pub fn segments(path: &str) -> Option<Vec<String>> {
    let trimmed = path.trim_start_matches('/');
    if trimmed.is_empty() {
        return Some(Vec::new());
    }
    trimmed.split('/').map(|s| decode(s, false)).collect()
}

/// The `name=value` pairs of a query string, decoded.
#[derive(Debug, Default)]
pub struct Query {
    pairs: Vec<(String, String)>,
}

impl Query {
    pub fn parse(query: Option<&str>) -> Result<Query, ApiError> {
        let mut pairs = Vec::new();
        for part in query.unwrap_or("").split('&').filter(|p| !p.is_empty()) {
            let (k, v) = part.split_once('=').unwrap_or((part, ""));
            match (decode(k, true), decode(v, true)) {
                (Some(k), Some(v)) => pairs.push((k, v)),
                _ => return Err(ApiError::bad_request("the query string is not valid")),
            }
        }
        Ok(Query { pairs })
    }

    /// The first value of `name` (an empty value counts as absent).
    pub fn get(&self, name: &str) -> Option<&str> {
        self.pairs
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
            .filter(|v| !v.is_empty())
    }

    /// An integer parameter in `min..=max`, `default` when absent.
    pub fn int(&self, name: &str, default: i64, min: i64, max: i64) -> Result<i64, ApiError> {
        match self.get(name) {
            None => Ok(default),
            Some(v) => match v.trim().parse::<i64>() {
                Ok(n) if (min..=max).contains(&n) => Ok(n),
                _ => Err(ApiError::bad_request(format!(
                    "`{name}` must be a whole number from {min} to {max}"
                ))),
            },
        }
    }

    /// `limit`: 1 to [`MAX_LIMIT`], [`DEFAULT_LIMIT`] when absent.
    pub fn limit(&self) -> Result<usize, ApiError> {
        Ok(self.int("limit", DEFAULT_LIMIT as i64, 1, MAX_LIMIT as i64)? as usize)
    }

    /// `offset`: 0 or more.
    pub fn offset(&self) -> Result<usize, ApiError> {
        Ok(self.int("offset", 0, 0, i64::from(u32::MAX))? as usize)
    }

    /// A yes/no parameter: `1`/`true`/`yes`/`on` or `0`/`false`/`no`/`off`.
    pub fn flag(&self, name: &str) -> Result<bool, ApiError> {
        match self.get(name).map(str::to_ascii_lowercase).as_deref() {
            None | Some("0" | "false" | "no" | "off") => Ok(false),
            Some("1" | "true" | "yes" | "on") => Ok(true),
            Some(_) => Err(ApiError::bad_request(format!("`{name}` must be 1 or 0"))),
        }
    }

    /// A comma-separated list (empty when absent).
    pub fn list(&self, name: &str) -> Vec<String> {
        self.get(name)
            .map(|v| {
                v.split(',')
                    .map(|s| s.trim().to_owned())
                    .filter(|s| !s.is_empty())
                    .collect()
            })
            .unwrap_or_default()
    }
}

/// A stream entry id (`<ms>-<seq>` or `<ms>`), as `before` takes it.
pub fn stream_id(name: &str, value: &str) -> Result<String, ApiError> {
    let (ms, seq) = value.split_once('-').unwrap_or((value, "0"));
    let digits = |s: &str| !s.is_empty() && s.len() <= 20 && s.bytes().all(|b| b.is_ascii_digit());
    if digits(ms) && digits(seq) {
        Ok(format!("{ms}-{seq}"))
    } else {
        Err(ApiError::bad_request(format!(
            "`{name}` must be a stream entry id such as 1700000000000-0"
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes() {
        assert_eq!(decode("a%20b+c", true).unwrap(), "a b c");
        assert_eq!(decode("a%20b+c", false).unwrap(), "a b+c");
        assert_eq!(decode("%E2%9C%93", false).unwrap(), "\u{2713}");
        assert!(decode("%zz", false).is_none());
        assert!(decode("%4", false).is_none());
        assert!(decode("%ff", false).is_none()); // not UTF-8
        assert_eq!(
            segments("/api/queues/a%2Fb/jobs/cron:x:1").unwrap(),
            ["api", "queues", "a/b", "jobs", "cron:x:1"]
        );
        assert_eq!(segments("/").unwrap(), Vec::<String>::new());
        assert!(segments("/api/%").is_none());
    }

    #[test]
    fn paging_parameters() {
        let q = Query::parse(Some("limit=500&offset=20&args=1&kind=ok,%20fail&empty=")).unwrap();
        assert_eq!(q.limit().unwrap(), 500);
        assert_eq!(q.offset().unwrap(), 20);
        assert!(q.flag("args").unwrap());
        assert!(!q.flag("missing").unwrap());
        assert_eq!(q.list("kind"), ["ok", "fail"]);
        assert_eq!(q.get("empty"), None);
        let defaults = Query::parse(None).unwrap();
        assert_eq!(defaults.limit().unwrap(), DEFAULT_LIMIT);
        assert_eq!(defaults.offset().unwrap(), 0);
        for bad in ["limit=501", "limit=0", "limit=-1", "limit=ten", "offset=-5"] {
            let q = Query::parse(Some(bad)).unwrap();
            let err = q.limit().and(q.offset()).unwrap_err();
            assert_eq!(err.status, hyper::StatusCode::BAD_REQUEST, "{bad}");
        }
        assert!(Query::parse(Some("args=maybe"))
            .unwrap()
            .flag("args")
            .is_err());
        assert!(Query::parse(Some("a=%zz")).is_err());
    }

    #[test]
    fn stream_ids() {
        assert_eq!(stream_id("before", "1700-3").unwrap(), "1700-3");
        assert_eq!(stream_id("before", "1700").unwrap(), "1700-0");
        for bad in ["", "-", "x-1", "1-x", "1-2-3", "+"] {
            assert!(stream_id("before", bad).is_err(), "{bad}");
        }
    }
}
