//! The page's static files, embedded in the binary from `crates/ardiq-worker/dashboard/`
//! (HTML, CSS and JS kept as files in the repository). [`ASSETS`] is the one list of
//! them: a file added to the folder is served once it is listed here (a test fails until
//! it is).

/// One embedded file.
#[derive(Debug, PartialEq, Eq)]
pub struct Asset {
    /// Its path in the folder (`vendor/x.js` for a file in a subfolder), which is also
    /// its path under the server root.
    pub name: &'static str,
    pub bytes: &'static [u8],
    /// Served without authentication: the login page and what it loads.
    pub public: bool,
}

macro_rules! assets {
    ($($name:literal $(=> $public:ident)?),* $(,)?) => {
        &[$(Asset {
            name: $name,
            bytes: include_bytes!(concat!("../../dashboard/", $name)),
            public: assets!(@public $($public)?),
        }),*]
    };
    (@public public) => { true };
    (@public) => { false };
}

/// Every file of the folder. `public` marks the login page and its assets.
pub static ASSETS: &[Asset] = assets!(
    "app.js",
    "index.html",
    "login.html" => public,
    "login.js" => public,
    "style.css" => public,
);

/// The page served at the root.
pub const INDEX: &str = "index.html";

/// The login page (served at `login`).
pub const LOGIN: &str = "login.html";

/// The asset named `name`, if it is one.
pub fn find(name: &str) -> Option<&'static Asset> {
    ASSETS.iter().find(|a| a.name == name)
}

/// The `Content-Type` for a file name, by its extension.
pub fn content_type(name: &str) -> &'static str {
    match name.rsplit_once('.').map_or("", |(_, ext)| ext) {
        "html" => "text/html; charset=utf-8",
        "js" | "mjs" => "text/javascript; charset=utf-8",
        "css" => "text/css; charset=utf-8",
        "svg" => "image/svg+xml",
        "png" => "image/png",
        "ico" => "image/x-icon",
        "json" => "application/json",
        "woff2" => "font/woff2",
        "txt" | "md" => "text/plain; charset=utf-8",
        _ => "application/octet-stream",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every file of the folder is listed (and nothing else): a file the page needs is
    /// never left out of the binary.
    #[test]
    fn every_file_of_the_folder_is_listed() {
        fn walk(dir: &std::path::Path, prefix: &str, out: &mut Vec<String>) {
            for e in std::fs::read_dir(dir).unwrap() {
                let e = e.unwrap();
                let name = e.file_name().to_string_lossy().into_owned();
                if name.starts_with('.') {
                    continue;
                }
                if e.file_type().unwrap().is_dir() {
                    walk(&e.path(), &format!("{prefix}{name}/"), out);
                } else {
                    out.push(format!("{prefix}{name}"));
                }
            }
        }
        let mut files = Vec::new();
        let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/dashboard");
        walk(std::path::Path::new(dir), "", &mut files);
        files.sort();
        let mut listed: Vec<&str> = ASSETS.iter().map(|a| a.name).collect();
        listed.sort();
        assert_eq!(files, listed, "list the folder's files in ASSETS");
    }

    #[test]
    fn the_pages_exist_and_the_app_needs_a_login() {
        assert!(!find(INDEX).unwrap().public);
        assert!(!find("app.js").unwrap().public);
        assert!(find(LOGIN).unwrap().public);
        assert!(find("../Cargo.toml").is_none());
        assert_eq!(content_type("app.js"), "text/javascript; charset=utf-8");
        assert_eq!(content_type("x"), "application/octet-stream");
    }
}
