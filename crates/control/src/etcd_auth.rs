//! The control plane as the administrator of the local etcd cluster's role-based
//! access (`docs/high-availability.md`, "Who may steer a server"): typed calls to
//! etcd v3's authentication API and key ranges through its JSON gateway, which is
//! what Patroni speaks too.
//!
//! Through the gateway etcd takes no user from a client certificate's common name
//! (etcd refuses a gateway request whose certificate has one once authentication
//! is on): a user proves itself with a password, exchanged for a token
//! (`/v3/auth/authenticate`). The certificate still decides who may open a
//! connection at all (`--client-cert-auth`).

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use pgcmk_crypto::SecretBytes;
use reqwest::blocking::Client;
use serde::de::{DeserializeOwned, IgnoredAny};
use serde::{Deserialize, Serialize};

/// The user (and role) whose token may do anything: the control plane's.
pub const ROOT: &str = "root";

/// Why etcd refused a request, as its error message says (etcd's `rpctypes`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Refused {
    /// The user or role exists already.
    #[error("it exists already")]
    AlreadyExists,
    /// No such user or role.
    #[error("no such user or role")]
    NotFound,
    /// Authentication is not enabled on the cluster.
    #[error("authentication is not enabled")]
    AuthNotEnabled,
    /// A wrong user name or password.
    #[error("a wrong user name or password")]
    BadCredentials,
    /// The token's user may not do this.
    #[error("permission denied")]
    PermissionDenied,
    /// Anything else, as etcd said it.
    #[error("{0}")]
    Other(String),
}

/// Why talking to etcd as its administrator failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum EtcdError {
    /// No endpoint answered.
    #[error("no etcd endpoint answered ({0}); retry when etcd answers")]
    Unreachable(String),
    /// etcd refused `what`.
    #[error("etcd refused to {what}: {refused}")]
    Refused {
        /// What was asked.
        what: String,
        /// Why it was refused.
        refused: Refused,
    },
    /// An existing cluster refuses the root password the operator gave.
    #[error(
        "the existing etcd cluster refuses the root password of --etcd-root-password-file: \
         give the password of its root user"
    )]
    GivenRootRefused,
    /// An existing cluster whose users the control plane should administer has
    /// authentication off.
    #[error(
        "authentication is not enabled on the existing etcd cluster: enable it (etcdctl \
         user add root; etcdctl auth enable), or start the control plane without \
         --etcd-root-password-file"
    )]
    AuthOff,
    /// The root user's password in the state does not open the cluster.
    #[error(
        "etcd refuses the control plane's root password: the cluster's authentication was \
         set up by another state; replace the cluster (docs/high-availability.md)"
    )]
    RootRefused,
}

/// etcd's error body.
#[derive(Deserialize)]
struct ErrorBody {
    #[serde(default)]
    error: String,
}

impl Refused {
    fn of(message: &str) -> Self {
        if message.contains("already exists") {
            Refused::AlreadyExists
        } else if message.contains("not found") {
            Refused::NotFound
        } else if message.contains("authentication is not enabled") {
            Refused::AuthNotEnabled
        } else if message.contains("authentication failed") {
            Refused::BadCredentials
        } else if message.contains("permission denied") {
            Refused::PermissionDenied
        } else {
            Refused::Other(message.to_string())
        }
    }
}

#[derive(Serialize)]
struct Credentials<'a> {
    name: &'a str,
    password: &'a str,
}

#[derive(Deserialize)]
struct Token {
    token: String,
}

#[derive(Serialize)]
struct Name<'a> {
    name: &'a str,
}

#[derive(Serialize)]
struct RoleName<'a> {
    role: &'a str,
}

#[derive(Serialize)]
struct Grant<'a> {
    user: &'a str,
    role: &'a str,
}

#[derive(Serialize)]
struct RoleGrant<'a> {
    name: &'a str,
    perm: Permission,
}

/// Read and write on the keys `[key, range_end)` (base64, as the gateway wants).
#[derive(Serialize)]
struct Permission {
    #[serde(rename = "permType")]
    perm_type: &'static str,
    key: String,
    range_end: String,
}

#[derive(Serialize)]
struct KeyRange {
    key: String,
    range_end: String,
}

/// A client of one etcd cluster's administration, asking its endpoints in turn.
pub struct EtcdAdmin {
    http: Client,
    endpoints: Vec<String>,
    token: Option<String>,
}

impl EtcdAdmin {
    /// An administrator's client over `http` (HTTPS, with a client certificate of
    /// the cluster's CA), not yet authenticated.
    pub fn new(http: Client, endpoints: &[String]) -> Self {
        Self {
            http,
            endpoints: endpoints.to_vec(),
            token: None,
        }
    }

    /// Asks `path` with `body`: etcd's answer, or why it refused.
    fn call<T: DeserializeOwned>(
        &self,
        path: &str,
        body: &impl Serialize,
    ) -> Result<Result<T, Refused>, EtcdError> {
        let mut failures = Vec::new();
        for endpoint in &self.endpoints {
            let url = format!("{}/v3/{path}", endpoint.trim_end_matches('/'));
            let mut request = self.http.post(&url).json(body);
            if let Some(token) = &self.token {
                request = request.header("Authorization", token);
            }
            let answer = match request.send() {
                Ok(answer) => answer,
                Err(e) => {
                    failures.push(format!("{endpoint}: {e}"));
                    continue;
                }
            };
            let status = answer.status();
            let text = answer.text().unwrap_or_default();
            if status.is_success() {
                return serde_json::from_str(&text).map(Ok).map_err(|e| {
                    EtcdError::Unreachable(format!("{endpoint} answered {path} with {e}"))
                });
            }
            let message = serde_json::from_str::<ErrorBody>(&text)
                .map(|b| b.error)
                .unwrap_or_else(|_| format!("{status}: {}", text.trim()));
            return Ok(Err(Refused::of(&message)));
        }
        Err(EtcdError::Unreachable(failures.join("; ")))
    }

    /// Like [`EtcdAdmin::call`], a refusal being an error saying `what` failed.
    fn must<T: DeserializeOwned>(
        &self,
        path: &str,
        body: &impl Serialize,
        what: impl FnOnce() -> String,
    ) -> Result<T, EtcdError> {
        self.call(path, body)?
            .map_err(|refused| EtcdError::Refused {
                what: what(),
                refused,
            })
    }

    /// Like [`EtcdAdmin::must`], `tolerated` counting as done (an idempotent step).
    fn tolerating(
        &self,
        path: &str,
        body: &impl Serialize,
        tolerated: Refused,
        what: impl FnOnce() -> String,
    ) -> Result<(), EtcdError> {
        match self.call::<IgnoredAny>(path, body)? {
            Ok(_) => Ok(()),
            Err(refused) if refused == tolerated => Ok(()),
            Err(refused) => Err(EtcdError::Refused {
                what: what(),
                refused,
            }),
        }
    }

    /// A token for user `name`, or why etcd refused it.
    pub fn authenticate(
        &self,
        name: &str,
        password: &SecretBytes,
    ) -> Result<Result<String, Refused>, EtcdError> {
        let password = String::from_utf8_lossy(password.expose_secret());
        let answer = self.call::<Token>(
            "auth/authenticate",
            &Credentials {
                name,
                password: &password,
            },
        )?;
        Ok(answer.map(|t| t.token))
    }

    /// Makes sure authentication is on with `root` (whose password is
    /// `root_password`) as its root user, and acts as root from now on. A cluster
    /// without authentication gets it (its root user and role first).
    pub fn become_root(&mut self, root_password: &SecretBytes) -> Result<(), EtcdError> {
        match self.log_in_as_root(root_password) {
            Err(EtcdError::AuthOff) => {}
            other => return other.map_err(Self::as_own_root),
        }
        self.set_user(ROOT, root_password)?;
        self.tolerating(
            "auth/role/add",
            &Name { name: ROOT },
            Refused::AlreadyExists,
            || "add the root role".into(),
        )?;
        self.must::<IgnoredAny>(
            "auth/user/grant",
            &Grant {
                user: ROOT,
                role: ROOT,
            },
            || "grant the root role to the root user".into(),
        )?;
        self.must::<IgnoredAny>("auth/enable", &serde_json::Map::new(), || {
            "enable authentication".into()
        })?;
        self.log_in_as_root(root_password)
            .map_err(Self::as_own_root)
    }

    /// A refused root password means, for the control plane's own cluster, that
    /// another state set it up.
    fn as_own_root(error: EtcdError) -> EtcdError {
        match error {
            EtcdError::GivenRootRefused => EtcdError::RootRefused,
            other => other,
        }
    }

    /// Acts as the root user from now on: refused when authentication is off
    /// ([`EtcdError::AuthOff`]) or the password does not open it.
    pub fn log_in_as_root(&mut self, root_password: &SecretBytes) -> Result<(), EtcdError> {
        match self.authenticate(ROOT, root_password)? {
            Ok(token) => {
                self.token = Some(token);
                Ok(())
            }
            Err(Refused::AuthNotEnabled) => Err(EtcdError::AuthOff),
            Err(Refused::BadCredentials) => Err(EtcdError::GivenRootRefused),
            Err(refused) => Err(EtcdError::Refused {
                what: "authenticate the root user".into(),
                refused,
            }),
        }
    }

    /// Makes user `name` exist with `password` (added, or its password changed
    /// when it does not open it).
    fn set_user(&self, name: &str, password: &SecretBytes) -> Result<(), EtcdError> {
        let text = String::from_utf8_lossy(password.expose_secret());
        let credentials = Credentials {
            name,
            password: &text,
        };
        match self.call::<IgnoredAny>("auth/user/add", &credentials)? {
            Ok(_) => return Ok(()),
            Err(Refused::AlreadyExists) => {}
            Err(refused) => {
                return Err(EtcdError::Refused {
                    what: format!("add user {name}"),
                    refused,
                })
            }
        }
        if self.authenticate(name, password)?.is_ok() {
            return Ok(());
        }
        self.must("auth/user/changepw", &credentials, || {
            format!("change the password of user {name}")
        })
        .map(|_: IgnoredAny| ())
    }

    /// Makes user `user` exist with `password`, holding role `user` with read and
    /// write on the keys `[start, end)` and nothing else.
    pub fn confine_user(
        &self,
        user: &str,
        password: &SecretBytes,
        (start, end): (&str, &str),
    ) -> Result<(), EtcdError> {
        self.tolerating(
            "auth/role/add",
            &Name { name: user },
            Refused::AlreadyExists,
            || format!("add role {user}"),
        )?;
        let perm = Permission {
            perm_type: "READWRITE",
            key: B64.encode(start),
            range_end: B64.encode(end),
        };
        self.must::<IgnoredAny>("auth/role/grant", &RoleGrant { name: user, perm }, || {
            format!("grant role {user} its keys")
        })?;
        self.set_user(user, password)?;
        self.must::<IgnoredAny>("auth/user/grant", &Grant { user, role: user }, || {
            format!("grant role {user} to its user")
        })?;
        Ok(())
    }

    /// Removes user `user` and its role `user` (either already gone is done).
    pub fn remove_user(&self, user: &str) -> Result<(), EtcdError> {
        self.tolerating(
            "auth/user/delete",
            &Name { name: user },
            Refused::NotFound,
            || format!("delete user {user}"),
        )?;
        self.tolerating(
            "auth/role/delete",
            &RoleName { role: user },
            Refused::NotFound,
            || format!("delete role {user}"),
        )
    }

    /// Removes every key in `[start, end)`.
    pub fn delete_range(&self, (start, end): (&str, &str)) -> Result<(), EtcdError> {
        let range = KeyRange {
            key: B64.encode(start),
            range_end: B64.encode(end),
        };
        self.must::<IgnoredAny>("kv/deleterange", &range, || {
            format!("delete the keys under {start}")
        })
        .map(|_| ())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn etcd_messages_name_the_refusal() {
        for (message, refused) in [
            (
                "etcdserver: user name already exists",
                Refused::AlreadyExists,
            ),
            (
                "etcdserver: role name already exists",
                Refused::AlreadyExists,
            ),
            ("etcdserver: user name not found", Refused::NotFound),
            ("etcdserver: role name not found", Refused::NotFound),
            (
                "etcdserver: authentication is not enabled",
                Refused::AuthNotEnabled,
            ),
            (
                "etcdserver: authentication failed, invalid user ID or password",
                Refused::BadCredentials,
            ),
            ("etcdserver: permission denied", Refused::PermissionDenied),
        ] {
            assert_eq!(Refused::of(message), refused, "{message}");
        }
        assert_eq!(
            Refused::of("etcdserver: too many requests"),
            Refused::Other("etcdserver: too many requests".into())
        );
    }
}
