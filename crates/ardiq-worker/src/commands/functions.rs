//! `ardiq functions install|status`: ArdiQ's scripts as a Redis 7 function library.
//!
//! An administrator installs the library once (`FUNCTION LOAD REPLACE`); producers and
//! workers then call it with `FCALL` and need no right to load Lua of their own (README,
//! "Security"). Each version has its own library (`ardiq_<hash>`), so versions can be
//! loaded side by side during a rollout.

use ardiq_core::scripts;
use serde::Serialize;

use crate::cli::{FunctionsAction, FunctionsArgs};
use crate::failure::{code, Failure};
use crate::ops;

/// `functions install|status --json`: this version's library, whether Redis holds it, and
/// (status) every ArdiQ library Redis holds.
#[derive(Serialize)]
struct StatusJson<'a> {
    library: &'a str,
    loaded: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    libraries: Option<&'a [String]>,
}

pub fn run(args: FunctionsArgs) -> i32 {
    let code = match functions(&args) {
        Ok(()) => code::OK,
        Err(f) => {
            f.print();
            f.code
        }
    };
    ops::leave(code)
}

fn functions(args: &FunctionsArgs) -> Result<(), Failure> {
    let target = ops::resolve(&args.queue)?;
    let rt = ops::runtime()?;
    let json = args.queue.json;
    let name = scripts::library_name();
    match args.action {
        FunctionsAction::Install => {
            rt.block_on(async {
                let mut client = ops::connect(&target.url).await?;
                client.install_functions().await.map_err(ops::failure)
            })?;
            if json {
                ops::print_json(&StatusJson {
                    library: name,
                    loaded: true,
                    libraries: None,
                });
            } else {
                println!(
                    "installed library `{name}`: users with `+fcall` run ArdiQ's scripts without `+evalsha` or `+script|load`"
                );
            }
        }
        FunctionsAction::Status => {
            let loaded = rt.block_on(async {
                let mut client = ops::connect(&target.url).await?;
                client.function_libraries().await.map_err(ops::failure)
            })?;
            let here = loaded.iter().any(|l| l == name);
            if json {
                ops::print_json(&StatusJson {
                    library: name,
                    loaded: here,
                    libraries: Some(&loaded),
                });
            } else {
                let state = if here { "loaded" } else { "not loaded" };
                let all = if loaded.is_empty() {
                    "none".to_owned()
                } else {
                    loaded.join(", ")
                };
                println!(
                    "library `{name}` (this version): {state}; ArdiQ libraries in Redis: {all}"
                );
            }
        }
    }
    Ok(())
}
