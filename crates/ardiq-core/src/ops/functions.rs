//! The function library (`ardiq functions install|status`).

use redis::Value;

use super::{Client, OpsError};
use crate::reply;
use crate::scripts;

impl Client {
    /// Loads this build's function library with `FUNCTION LOAD REPLACE` (an
    /// administrator's right); returns its name. Loading it again changes nothing.
    pub async fn install_functions(&mut self) -> Result<String, OpsError> {
        let (name, text) = scripts::library();
        let _: Value = self
            .query(redis::cmd("FUNCTION").arg("LOAD").arg("REPLACE").arg(text))
            .await?;
        Ok(name.clone())
    }

    /// The ArdiQ function libraries Redis holds (this build's and other versions'), sorted.
    pub async fn function_libraries(&mut self) -> Result<Vec<String>, OpsError> {
        let pattern = format!("{}*", scripts::LIBRARY_PREFIX);
        let reply: Value = self
            .query(
                redis::cmd("FUNCTION")
                    .arg("LIST")
                    .arg("LIBRARYNAME")
                    .arg(pattern),
            )
            .await?;
        let mut names: Vec<String> = reply::array(&reply)
            .unwrap_or_default()
            .iter()
            .filter_map(|lib| {
                let pairs = reply::pairs(lib)?;
                pairs
                    .into_iter()
                    .find(|(k, _)| reply::bytes(k) == Some(b"library_name".as_slice()))
                    .and_then(|(_, v)| reply::string(v))
            })
            .filter(|n| n.starts_with(scripts::LIBRARY_PREFIX))
            .collect();
        names.sort();
        Ok(names)
    }
}
