//! Why a command failed, and the exit code that says so.

use std::fmt;
use std::process::ExitCode;

/// A failed command: exit 1 for what the user can fix in the command or
/// its config, 2 for the environment (a server unreachable, a port in use),
/// 3 for a question whose answer is "nothing there" (`get` of a missing
/// key), so that a script can tell it from an error.
#[derive(Debug)]
pub(crate) enum Failure {
    /// Bad config, bad arguments, unknown region.
    User(String),
    /// Unreachable server, port in use, I/O outside the user's input.
    Environment(String),
    /// Nothing stored where the command looked.
    NotFound(String),
    /// Stopped by Ctrl-C (after cleaning up): 130, as a shell reports it.
    Interrupted,
}

impl Failure {
    pub(crate) fn exit_code(&self) -> ExitCode {
        match self {
            Failure::User(_) => ExitCode::from(1),
            Failure::Environment(_) => ExitCode::from(2),
            Failure::NotFound(_) => ExitCode::from(3),
            Failure::Interrupted => ExitCode::from(130),
        }
    }
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Failure::User(message) | Failure::Environment(message) | Failure::NotFound(message) => {
                f.write_str(message)
            }
            Failure::Interrupted => f.write_str("interrupted"),
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
