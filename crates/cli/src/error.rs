//! Why a `pgcmk` command failed, and the exit code that tells a script which kind
//! of failure it was (documented in `docs/operations.md`, "Exit codes").

use std::fmt;
use std::process::ExitCode;

use pgcmk_control::ErrorCode;
use pgcmk_keyprovider::KeyError;

/// The kinds of failure a script can tell apart by the exit code.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Failure {
    /// Anything else: an internal error of a service, a local I/O failure (1).
    Failed,
    /// The command line or its input is wrong: a missing or invalid argument, a
    /// file that is not what it should be, a request the service rejected as
    /// invalid (2, as for clap's own usage errors).
    Usage,
    /// The named server, vault, key or identity does not exist (3).
    NotFound,
    /// The operation does not fit the current state: the name is taken, the server
    /// is stopped, running or being deleted, or it settled in another state (4).
    Conflict,
    /// A credential or a right is missing or refused: the DBA credential, the
    /// identity's access to the key, an administrator's role (5).
    Denied,
    /// A service is unreachable or failing, or not trusted; retrying may help (6).
    Unavailable,
    /// The operation did not finish in time (a server not Ready) (7).
    TimedOut,
    /// An integrity check found damage: blocks of a volume that fail
    /// authentication, or a broken audit trail (8).
    Damaged,
}

impl Failure {
    /// The process exit code.
    pub fn exit_code(self) -> u8 {
        match self {
            Failure::Failed => 1,
            Failure::Usage => 2,
            Failure::NotFound => 3,
            Failure::Conflict => 4,
            Failure::Denied => 5,
            Failure::Unavailable => 6,
            Failure::TimedOut => 7,
            Failure::Damaged => 8,
        }
    }

    /// Its stable name in JSON errors (`{"error": {"code"}}`), as in the docs' table.
    pub fn code(self) -> &'static str {
        match self {
            Failure::Failed => "failed",
            Failure::Usage => "usage",
            Failure::NotFound => "not-found",
            Failure::Conflict => "conflict",
            Failure::Denied => "denied",
            Failure::Unavailable => "unavailable",
            Failure::TimedOut => "timed-out",
            Failure::Damaged => "damaged",
        }
    }

    /// The kind of failure an error answer of the control plane's API stands for.
    fn of_api(code: ErrorCode) -> Self {
        match code {
            ErrorCode::BadRequest => Failure::Usage,
            ErrorCode::KeyAccessDenied | ErrorCode::Unauthorized | ErrorCode::KeyVersionRefused => {
                Failure::Denied
            }
            ErrorCode::NotFound => Failure::NotFound,
            ErrorCode::NameTaken | ErrorCode::StateConflict | ErrorCode::NotReady => {
                Failure::Conflict
            }
            ErrorCode::KeyVaultUnavailable | ErrorCode::HostUnavailable => Failure::Unavailable,
            ErrorCode::ReadyTimeout => Failure::TimedOut,
            _ => Failure::Failed,
        }
    }

    /// The kind of failure an HTTP error status of a vault service stands for.
    fn of_status(status: u16) -> Self {
        match status {
            400 | 405 | 413 | 415 | 422 => Failure::Usage,
            401 | 403 => Failure::Denied,
            404 => Failure::NotFound,
            409 => Failure::Conflict,
            408 | 429 | 502 | 503 => Failure::Unavailable,
            504 => Failure::TimedOut,
            _ => Failure::Failed,
        }
    }
}

/// A failed command: what went wrong (printed as `error: ...`), and its kind.
#[derive(Debug)]
pub struct CliError {
    failure: Failure,
    message: String,
}

impl CliError {
    /// A failure of `kind`, explained by `message`.
    pub fn new(failure: Failure, message: impl Into<String>) -> Self {
        Self {
            failure,
            message: message.into(),
        }
    }

    /// The command line or its input is wrong.
    pub fn usage(message: impl Into<String>) -> Self {
        Self::new(Failure::Usage, message)
    }

    /// Any other failure.
    pub fn failed(message: impl Into<String>) -> Self {
        Self::new(Failure::Failed, message)
    }

    /// The process exit code for it.
    pub fn exit_code(&self) -> ExitCode {
        ExitCode::from(self.failure.exit_code())
    }

    /// What `--output json` prints on stderr for it:
    /// `{"error": {"code", "message", "exit_code"}}`.
    pub fn to_json(&self) -> serde_json::Value {
        serde_json::json!({
            "error": {
                "code": self.failure.code(),
                "message": self.message,
                "exit_code": self.failure.exit_code(),
            }
        })
    }
}

impl fmt::Display for CliError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for CliError {}

impl From<pgcmk_control::Error> for CliError {
    fn from(e: pgcmk_control::Error) -> Self {
        use pgcmk_control::Error as E;
        let failure = match &e {
            E::Unreachable(_) => Failure::Unavailable,
            E::Api { code, .. } => Failure::of_api(*code),
            E::Io { .. } | E::Store(_) | E::Crypto(_) | E::Aborted(_) | E::AgentTask(_) => {
                Failure::Failed
            }
            // The client's own checks (a bad --endpoint, an unreadable CA or credential
            // file) and the server's, with the same codes the API gives them.
            other => match other.code() {
                ErrorCode::InternalError => Failure::Usage,
                code => Failure::of_api(code),
            },
        };
        Self::new(failure, e.to_string())
    }
}

impl From<pgcmk_vault::Error> for CliError {
    fn from(e: pgcmk_vault::Error) -> Self {
        use pgcmk_vault::Error as E;
        let failure = match &e {
            E::Api { status, .. } => Failure::of_status(*status),
            E::Client(_) => Failure::Unavailable,
            E::Config(_) | E::RootKey(_) | E::AddressInUse { .. } => Failure::Usage,
            _ => Failure::Failed,
        };
        Self::new(failure, e.to_string())
    }
}

impl From<KeyError> for CliError {
    fn from(e: KeyError) -> Self {
        let failure = match &e {
            KeyError::Denied { .. } => Failure::Denied,
            KeyError::Transient { .. } => Failure::Unavailable,
            _ => Failure::Usage,
        };
        Self::new(failure, e.to_string())
    }
}

impl From<pgcmk_agent::Error> for CliError {
    fn from(e: pgcmk_agent::Error) -> Self {
        let failure = match &e {
            pgcmk_agent::Error::Key(KeyError::Denied { .. }) => Failure::Denied,
            pgcmk_agent::Error::Key(KeyError::Transient { .. }) => Failure::Unavailable,
            pgcmk_agent::Error::Handshake(_) => Failure::Usage,
            _ => Failure::Failed,
        };
        Self::new(failure, e.to_string())
    }
}

impl From<pgcmk_cryptfs::Error> for CliError {
    fn from(e: pgcmk_cryptfs::Error) -> Self {
        Self::failed(e.to_string())
    }
}

impl From<serde_json::Error> for CliError {
    fn from(e: serde_json::Error) -> Self {
        Self::failed(format!("unexpected JSON: {e}"))
    }
}

impl From<std::io::Error> for CliError {
    fn from(e: std::io::Error) -> Self {
        Self::failed(e.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exit_codes_are_distinct_and_in_order() {
        let all = [
            Failure::Failed,
            Failure::Usage,
            Failure::NotFound,
            Failure::Conflict,
            Failure::Denied,
            Failure::Unavailable,
            Failure::TimedOut,
            Failure::Damaged,
        ];
        let mut codes = std::collections::HashSet::new();
        for (i, failure) in all.iter().enumerate() {
            assert_eq!(usize::from(failure.exit_code()), i + 1, "{failure:?}");
            assert!(codes.insert(failure.code()), "{failure:?}");
        }
    }

    #[test]
    fn a_json_error_has_the_code_the_message_and_the_exit_code() {
        let e = CliError::new(Failure::NotFound, "server 'x' not found");
        assert_eq!(
            e.to_json(),
            serde_json::json!({"error": {
                "code": "not-found", "message": "server 'x' not found", "exit_code": 3
            }})
        );
    }

    /// Each code of the control plane's API has the exit code its meaning calls for.
    #[test]
    fn api_errors_map_to_their_kind() {
        let api = |code| {
            CliError::from(pgcmk_control::Error::Api {
                status: ErrorCode::status(code),
                code,
                message: "m".into(),
            })
            .failure
        };
        assert_eq!(api(ErrorCode::BadRequest), Failure::Usage);
        assert_eq!(api(ErrorCode::Unauthorized), Failure::Denied);
        assert_eq!(api(ErrorCode::KeyAccessDenied), Failure::Denied);
        assert_eq!(api(ErrorCode::KeyVersionRefused), Failure::Denied);
        assert_eq!(api(ErrorCode::NotFound), Failure::NotFound);
        assert_eq!(api(ErrorCode::NameTaken), Failure::Conflict);
        assert_eq!(api(ErrorCode::StateConflict), Failure::Conflict);
        assert_eq!(api(ErrorCode::NotReady), Failure::Conflict);
        assert_eq!(api(ErrorCode::KeyVaultUnavailable), Failure::Unavailable);
        assert_eq!(api(ErrorCode::HostUnavailable), Failure::Unavailable);
        assert_eq!(api(ErrorCode::ReadyTimeout), Failure::TimedOut);
        assert_eq!(api(ErrorCode::InternalError), Failure::Failed);
    }

    #[test]
    fn vault_answers_map_by_status() {
        let vault = |status| {
            CliError::from(pgcmk_vault::Error::Api {
                status,
                code: "X".into(),
                message: "m".into(),
            })
            .failure
        };
        assert_eq!(vault(400), Failure::Usage);
        assert_eq!(vault(403), Failure::Denied);
        assert_eq!(vault(404), Failure::NotFound);
        assert_eq!(vault(409), Failure::Conflict);
        assert_eq!(vault(503), Failure::Unavailable);
        assert_eq!(vault(500), Failure::Failed);
    }

    #[test]
    fn key_errors_say_whether_to_retry() {
        let key = |e| CliError::from(e).failure;
        let reason = String::from("r");
        assert_eq!(
            key(KeyError::Denied {
                reason: reason.clone()
            }),
            Failure::Denied
        );
        assert_eq!(
            key(KeyError::Transient {
                reason: reason.clone()
            }),
            Failure::Unavailable
        );
        assert_eq!(key(KeyError::Invalid { reason }), Failure::Usage);
    }
}
