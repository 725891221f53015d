//! The stable codes of the REST API's errors: what a client (the CLI, a script)
//! branches on, with the HTTP status that goes with each.

use serde::{Deserialize, Serialize};

/// The `code` of an error body `{"error": {"code", "message"}}`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[non_exhaustive]
pub enum ErrorCode {
    /// Malformed request, invalid name, location or key (400).
    BadRequest,
    /// The key or the identity is refused, and retrying will not help (400).
    KeyAccessDenied,
    /// No or a wrong DBA credential (401).
    Unauthorized,
    /// No such server (404).
    NotFound,
    /// A server of that name exists or is being created (409).
    NameTaken,
    /// Already stopped, being deleted, running, not running (409).
    StateConflict,
    /// Created or started, but it settled in another state than Ready (409).
    NotReady,
    /// The vault refuses a key version the server needs (409).
    KeyVersionRefused,
    /// The control plane failed (500): its log says more.
    InternalError,
    /// The key vault is unreachable or failing; retrying may help (503).
    KeyVaultUnavailable,
    /// The server was not Ready in time (504).
    ReadyTimeout,
    /// The server's host does not speak now; retrying once it does may help (503).
    HostUnavailable,
}

impl ErrorCode {
    /// The HTTP status the REST API answers with.
    pub fn status(self) -> u16 {
        match self {
            ErrorCode::BadRequest | ErrorCode::KeyAccessDenied => 400,
            ErrorCode::Unauthorized => 401,
            ErrorCode::NotFound => 404,
            ErrorCode::NameTaken
            | ErrorCode::StateConflict
            | ErrorCode::NotReady
            | ErrorCode::KeyVersionRefused => 409,
            ErrorCode::InternalError => 500,
            ErrorCode::KeyVaultUnavailable | ErrorCode::HostUnavailable => 503,
            ErrorCode::ReadyTimeout => 504,
        }
    }

    /// The code a client assumes for an error answer without a readable body
    /// (a proxy's page, a truncated reply): the most general one of its status.
    pub fn of_status(status: u16) -> Self {
        match status {
            400 => ErrorCode::BadRequest,
            401 | 403 => ErrorCode::Unauthorized,
            404 => ErrorCode::NotFound,
            409 => ErrorCode::StateConflict,
            502 | 503 => ErrorCode::KeyVaultUnavailable,
            504 => ErrorCode::ReadyTimeout,
            _ => ErrorCode::InternalError,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A body without a code is read as the code its status stands for.
    #[test]
    fn every_code_round_trips_through_its_status() {
        for code in [
            ErrorCode::BadRequest,
            ErrorCode::Unauthorized,
            ErrorCode::NotFound,
            ErrorCode::StateConflict,
            ErrorCode::InternalError,
            ErrorCode::KeyVaultUnavailable,
            ErrorCode::ReadyTimeout,
        ] {
            assert_eq!(ErrorCode::of_status(code.status()), code);
        }
        let json = serde_json::to_string(&ErrorCode::NameTaken).unwrap();
        assert_eq!(json, "\"NameTaken\"");
    }
}
