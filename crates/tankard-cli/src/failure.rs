//! Why a command failed, and the exit code that says so.

use std::fmt;
use std::process::ExitCode;

/// A failed command: exit 1 for what the user can fix in the command or
/// its config, 2 for the environment (a server unreachable, a port in use).
#[derive(Debug)]
pub(crate) enum Failure {
    /// Bad config, bad arguments, unknown region.
    User(String),
    /// Unreachable server, port in use, I/O outside the user's input.
    Environment(String),
}

impl Failure {
    pub(crate) fn exit_code(&self) -> ExitCode {
        match self {
            Failure::User(_) => ExitCode::from(1),
            Failure::Environment(_) => ExitCode::from(2),
        }
    }
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Failure::User(message) | Failure::Environment(message) => f.write_str(message),
        }
    }
}

/// Sorts a Tankard error: configuration and region errors are the user's,
/// backend errors the environment's.
impl From<tankard::Error> for Failure {
    fn from(err: tankard::Error) -> Failure {
        if err.is_backend() {
            Failure::Environment(err.to_string())
        } else {
            Failure::User(err.to_string())
        }
    }
}

pub(crate) type Outcome<T = ()> = Result<T, Failure>;
