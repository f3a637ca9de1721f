//! The CLI's one error type: what went wrong, in one line that names the fix, and which of the
//! documented exit codes it ends the process with (README, "For scripts").

use std::fmt;

/// Which kind of failure; each has its exit code.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum ErrorKind {
    /// The fleet said no: the peer agent refused or failed the head, or (with `--wait`) some
    /// agents failed or rejected it. Exit code 1.
    Refused,
    /// The command cannot be carried out as given: bad flags, an unreadable or invalid file, a
    /// version the peer's history contradicts. Nothing was sent. Exit code 2 (clap's own
    /// usage errors exit 2 too).
    Usage,
    /// No agent answered, or the connection was lost. Exit code 3.
    Unreachable,
    /// The fleet did not reach the goal within `--timeout`. Exit code 4.
    Timeout,
    /// A staged rollout (`release --waves`, `rollout resume`) was halted by a gate and rolled
    /// back to the release before (or, with none before, left paused at its wave). Exit code 5.
    Halted,
    /// A staged rollout this process drove was taken over: someone paused it, aborted it or
    /// pushed another head for the app; this driver stopped and changed nothing more. Exit
    /// code 6.
    Superseded,
}

impl ErrorKind {
    /// The process exit code.
    pub fn code(self) -> u8 {
        match self {
            ErrorKind::Refused => 1,
            ErrorKind::Usage => 2,
            ErrorKind::Unreachable => 3,
            ErrorKind::Timeout => 4,
            ErrorKind::Halted => 5,
            ErrorKind::Superseded => 6,
        }
    }

    /// The name in `--json` error events.
    pub fn name(self) -> &'static str {
        match self {
            ErrorKind::Refused => "refused",
            ErrorKind::Usage => "usage",
            ErrorKind::Unreachable => "unreachable",
            ErrorKind::Timeout => "timeout",
            ErrorKind::Halted => "halted",
            ErrorKind::Superseded => "superseded",
        }
    }
}

/// A failed command: its kind and a one-line message that says what was wrong and the fix.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct CliError {
    pub kind: ErrorKind,
    pub message: String,
}

impl CliError {
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        CliError {
            kind,
            message: message.into(),
        }
    }

    pub fn refused(message: impl Into<String>) -> Self {
        CliError::new(ErrorKind::Refused, message)
    }

    pub fn usage(message: impl Into<String>) -> Self {
        CliError::new(ErrorKind::Usage, message)
    }

    pub fn unreachable(message: impl Into<String>) -> Self {
        CliError::new(ErrorKind::Unreachable, message)
    }

    pub fn timeout(message: impl Into<String>) -> Self {
        CliError::new(ErrorKind::Timeout, message)
    }

    pub fn halted(message: impl Into<String>) -> Self {
        CliError::new(ErrorKind::Halted, message)
    }

    pub fn superseded(message: impl Into<String>) -> Self {
        CliError::new(ErrorKind::Superseded, message)
    }

    /// The exit code this error ends the process with.
    pub fn code(&self) -> u8 {
        self.kind.code()
    }
}

impl fmt::Display for CliError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for CliError {}

/// `Result` with [`CliError`].
pub type Result<T, E = CliError> = std::result::Result<T, E>;

/// Turns any displayable error into a [`CliError`] of one kind, with a prefix naming what was
/// being done (`"cannot read hello.wasm"`).
pub trait Context<T> {
    fn or_usage(self, what: impl FnOnce() -> String) -> Result<T>;
}

impl<T, E: fmt::Display> Context<T> for std::result::Result<T, E> {
    fn or_usage(self, what: impl FnOnce() -> String) -> Result<T> {
        self.map_err(|e| CliError::usage(format!("{}: {e}", what())))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_kind_has_its_documented_code_and_name() {
        let all = [
            (ErrorKind::Refused, 1, "refused"),
            (ErrorKind::Usage, 2, "usage"),
            (ErrorKind::Unreachable, 3, "unreachable"),
            (ErrorKind::Timeout, 4, "timeout"),
            (ErrorKind::Halted, 5, "halted"),
            (ErrorKind::Superseded, 6, "superseded"),
        ];
        for (kind, code, name) in all {
            assert_eq!((kind.code(), kind.name()), (code, name));
        }
        let e: std::result::Result<(), _> = Err("no such file");
        let e = e.or_usage(|| "cannot read a.wasm".into()).unwrap_err();
        assert_eq!(e.to_string(), "cannot read a.wasm: no such file");
        assert_eq!(e.code(), 2);
    }
}
