//! Errors a user can act on: one `error:` line, an optional detail (a traceback), and an
//! optional `hint:` after a blank line, each with the exit code documented in `--help`.

use std::fmt;

/// Exit codes (see `cli::EXIT_CODES`).
pub mod code {
    pub const OK: i32 = 0;
    pub const RUNTIME: i32 = 1;
    pub const USAGE: i32 = 2;
    pub const PYTHON: i32 = 3;
    /// A worker that recycled itself (`--max-tasks`, `--max-memory`): its supervisor
    /// starts a fresh one. Never the exit of `ardiq run` itself (`EX_TEMPFAIL`: "try
    /// again", which is what the supervisor does).
    pub const RECYCLED: i32 = 75;
}

#[derive(Debug)]
pub struct Failure {
    pub code: i32,
    pub message: String,
    /// Printed under the message (a Python traceback that is the user's to read).
    pub detail: Option<String>,
    pub hint: Option<String>,
}

impl Failure {
    pub fn new(code: i32, message: impl Into<String>) -> Self {
        Failure {
            code,
            message: message.into(),
            detail: None,
            hint: None,
        }
    }

    pub fn detail(mut self, detail: impl Into<String>) -> Self {
        self.detail = Some(detail.into());
        self
    }

    pub fn hint(mut self, hint: impl Into<String>) -> Self {
        self.hint = Some(hint.into());
        self
    }

    /// Writes it to stderr (not through the log: it must show even with `--quiet`).
    pub fn print(&self) {
        eprint!("{self}");
    }
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(detail) = &self.detail {
            writeln!(f, "{}", detail.trim_end())?;
        }
        writeln!(f, "error: {}", self.message)?;
        if let Some(hint) = &self.hint {
            writeln!(f, "\nhint: {hint}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders() {
        let f = Failure::new(2, "no module named `x`");
        assert_eq!(f.to_string(), "error: no module named `x`\n");
        let f = Failure::new(3, "no shared libpython").hint("run `await app.run()`");
        assert_eq!(
            f.to_string(),
            "error: no shared libpython\n\nhint: run `await app.run()`\n"
        );
    }
}
