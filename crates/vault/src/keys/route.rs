//! Data-plane routing: method + path → operation, following the Azure Key Vault
//! keys REST API. Empty version segments (`/keys/k1/`, `/keys/k1//unwrapkey`) mean
//! the current version.

use crate::policy::Permission;

/// A cryptographic operation on one key version.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CryptoOp {
    /// `encrypt`
    Encrypt,
    /// `decrypt`
    Decrypt,
    /// `wrapkey`
    WrapKey,
    /// `unwrapkey`
    UnwrapKey,
    /// `sign`
    Sign,
    /// `verify`
    Verify,
}

impl CryptoOp {
    fn parse(segment: &str) -> Option<Self> {
        Some(match segment.to_ascii_lowercase().as_str() {
            "encrypt" => Self::Encrypt,
            "decrypt" => Self::Decrypt,
            "wrapkey" => Self::WrapKey,
            "unwrapkey" => Self::UnwrapKey,
            "sign" => Self::Sign,
            "verify" => Self::Verify,
            _ => return None,
        })
    }

    /// The JWK `key_ops` value this operation needs.
    pub fn key_op(self) -> &'static str {
        match self {
            Self::Encrypt => "encrypt",
            Self::Decrypt => "decrypt",
            Self::WrapKey => "wrapKey",
            Self::UnwrapKey => "unwrapKey",
            Self::Sign => "sign",
            Self::Verify => "verify",
        }
    }
}

/// One data-plane operation with its path parameters.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Route {
    /// `POST /keys/{name}/create`
    Create(String),
    /// `PUT /keys/{name}`
    Import(String),
    /// `GET /keys/{name}/{version?}`
    Get(String, String),
    /// `PATCH /keys/{name}/{version?}`
    Update(String, String),
    /// `DELETE /keys/{name}`
    Delete(String),
    /// `GET /keys`
    List,
    /// `GET /keys/{name}/versions`
    ListVersions(String),
    /// `POST /keys/{name}/{version?}/{op}`
    Crypto(String, String, CryptoOp),
    /// `POST /keys/{name}/rotate`
    Rotate(String),
    /// `GET /keys/{name}/rotationpolicy`
    GetRotationPolicy(String),
    /// `PUT /keys/{name}/rotationpolicy`
    SetRotationPolicy(String),
    /// `POST /keys/{name}/backup`
    Backup(String),
    /// `POST /keys/restore`
    Restore,
    /// `GET /deletedkeys/{name}`
    GetDeleted(String),
    /// `GET /deletedkeys`
    ListDeleted,
    /// `POST /deletedkeys/{name}/recover`
    Recover(String),
    /// `DELETE /deletedkeys/{name}`
    Purge(String),
    /// `POST /rng`
    GetRandomBytes,
}

impl Route {
    /// Matches a request; `None` when no operation has this method and path.
    pub fn parse(method: &str, path: &str) -> Option<Self> {
        let segments: Vec<&str> = path.trim_start_matches('/').split('/').collect();
        let s = |i: usize| segments.get(i).map(|x| x.to_string()).unwrap_or_default();
        let route = match (method, segments.as_slice()) {
            ("GET", ["keys"] | ["keys", ""]) => Route::List,
            ("POST", ["keys", "restore"]) => Route::Restore,
            ("POST", ["keys", _, "create"]) => Route::Create(s(1)),
            ("PUT", ["keys", _]) => Route::Import(s(1)),
            ("DELETE", ["keys", _]) => Route::Delete(s(1)),
            ("GET", ["keys", _, "versions"]) => Route::ListVersions(s(1)),
            ("POST", ["keys", _, "rotate"]) => Route::Rotate(s(1)),
            ("GET", ["keys", _, "rotationpolicy"]) => Route::GetRotationPolicy(s(1)),
            ("PUT", ["keys", _, "rotationpolicy"]) => Route::SetRotationPolicy(s(1)),
            ("POST", ["keys", _, "backup"]) => Route::Backup(s(1)),
            ("GET", ["keys", _] | ["keys", _, _]) => Route::Get(s(1), s(2)),
            ("PATCH", ["keys", _] | ["keys", _, _]) => Route::Update(s(1), s(2)),
            ("POST", ["keys", _, _, op]) => Route::Crypto(s(1), s(2), CryptoOp::parse(op)?),
            ("POST", ["keys", _, op]) => Route::Crypto(s(1), String::new(), CryptoOp::parse(op)?),
            ("GET", ["deletedkeys"] | ["deletedkeys", ""]) => Route::ListDeleted,
            ("GET", ["deletedkeys", _]) => Route::GetDeleted(s(1)),
            ("DELETE", ["deletedkeys", _]) => Route::Purge(s(1)),
            ("POST", ["deletedkeys", _, "recover"]) => Route::Recover(s(1)),
            ("POST", ["rng"]) => Route::GetRandomBytes,
            _ => return None,
        };
        Some(route)
    }

    /// Why this vault does not offer an Azure Key Vault keys operation that has this
    /// method and path; `None` for requests that are no keys operation at all.
    pub fn not_offered(method: &str, path: &str) -> Option<&'static str> {
        let segments: Vec<&str> = path.trim_start_matches('/').split('/').collect();
        match (method, segments.as_slice()) {
            ("GET", ["keys", _, _, "attestation"]) => {
                Some("key attestation is a Managed HSM feature (keys held in an HSM)")
            }
            ("POST", ["keys", _, "release"] | ["keys", _, _, "release"]) => {
                Some("secure key release exports a key, and this vault makes no exportable keys")
            }
            _ => None,
        }
    }

    /// The operation name in the audit trail (Azure diagnostic log style).
    pub fn operation(&self) -> &'static str {
        match self {
            Route::Create(_) => "KeyCreate",
            Route::Import(_) => "KeyImport",
            Route::Get(..) => "KeyGet",
            Route::Update(..) => "KeyUpdate",
            Route::Delete(_) => "KeyDelete",
            Route::List => "KeyList",
            Route::ListVersions(_) => "KeyListVersions",
            Route::Crypto(_, _, op) => match op {
                CryptoOp::Encrypt => "KeyEncrypt",
                CryptoOp::Decrypt => "KeyDecrypt",
                CryptoOp::WrapKey => "KeyWrap",
                CryptoOp::UnwrapKey => "KeyUnwrap",
                CryptoOp::Sign => "KeySign",
                CryptoOp::Verify => "KeyVerify",
            },
            Route::Rotate(_) => "KeyRotate",
            Route::GetRotationPolicy(_) => "KeyRotationPolicyGet",
            Route::SetRotationPolicy(_) => "KeyRotationPolicySet",
            Route::Backup(_) => "KeyBackup",
            Route::Restore => "KeyRestore",
            Route::GetDeleted(_) => "KeyGetDeleted",
            Route::ListDeleted => "KeyListDeleted",
            Route::Recover(_) => "KeyRecover",
            Route::Purge(_) => "KeyPurge",
            Route::GetRandomBytes => "GetRandomBytes",
        }
    }

    /// The access-policy permission the operation needs.
    pub fn permission(&self) -> Permission {
        match self {
            Route::Create(_) => Permission::Create,
            Route::Import(_) => Permission::Import,
            Route::Get(..) | Route::GetDeleted(_) => Permission::Get,
            Route::Update(..) => Permission::Update,
            Route::Delete(_) => Permission::Delete,
            Route::List | Route::ListVersions(_) | Route::ListDeleted => Permission::List,
            Route::Crypto(_, _, op) => match op {
                CryptoOp::Encrypt => Permission::Encrypt,
                CryptoOp::Decrypt => Permission::Decrypt,
                CryptoOp::WrapKey => Permission::WrapKey,
                CryptoOp::UnwrapKey => Permission::UnwrapKey,
                CryptoOp::Sign => Permission::Sign,
                CryptoOp::Verify => Permission::Verify,
            },
            Route::Rotate(_) => Permission::Rotate,
            Route::GetRotationPolicy(_) => Permission::GetRotationPolicy,
            Route::SetRotationPolicy(_) => Permission::SetRotationPolicy,
            Route::Backup(_) => Permission::Backup,
            Route::Restore => Permission::Restore,
            Route::Recover(_) => Permission::Recover,
            Route::Purge(_) => Permission::Purge,
            Route::GetRandomBytes => Permission::Rng,
        }
    }

    /// The key name the request is about, if any.
    pub fn key_name(&self) -> Option<&str> {
        match self {
            Route::Create(n)
            | Route::Import(n)
            | Route::Get(n, _)
            | Route::Update(n, _)
            | Route::Delete(n)
            | Route::ListVersions(n)
            | Route::Crypto(n, _, _)
            | Route::Rotate(n)
            | Route::GetRotationPolicy(n)
            | Route::SetRotationPolicy(n)
            | Route::Backup(n)
            | Route::GetDeleted(n)
            | Route::Recover(n)
            | Route::Purge(n) => Some(n),
            Route::List | Route::Restore | Route::ListDeleted | Route::GetRandomBytes => None,
        }
    }

    /// The version named in the path, if any (empty = current).
    pub fn version(&self) -> Option<&str> {
        match self {
            Route::Get(_, v) | Route::Update(_, v) | Route::Crypto(_, v, _) if !v.is_empty() => {
                Some(v)
            }
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn azure_paths_route_including_empty_versions() {
        let v = "0123456789abcdef0123456789abcdef";
        assert_eq!(Route::parse("GET", "/keys"), Some(Route::List));
        assert_eq!(
            Route::parse("GET", "/keys/k1"),
            Some(Route::Get("k1".into(), "".into()))
        );
        assert_eq!(
            Route::parse("GET", "/keys/k1/"),
            Some(Route::Get("k1".into(), "".into()))
        );
        assert_eq!(
            Route::parse("GET", &format!("/keys/k1/{v}")),
            Some(Route::Get("k1".into(), v.into()))
        );
        assert_eq!(
            Route::parse("POST", "/keys/k1//unwrapkey"),
            Some(Route::Crypto("k1".into(), "".into(), CryptoOp::UnwrapKey))
        );
        assert_eq!(
            Route::parse("POST", &format!("/keys/k1/{v}/wrapKey")),
            Some(Route::Crypto("k1".into(), v.into(), CryptoOp::WrapKey))
        );
        assert_eq!(
            Route::parse("POST", "/keys/k1/create"),
            Some(Route::Create("k1".into()))
        );
        assert_eq!(Route::parse("POST", "/keys/restore"), Some(Route::Restore));
        assert_eq!(
            Route::parse("DELETE", "/deletedkeys/k1"),
            Some(Route::Purge("k1".into()))
        );
        assert_eq!(Route::parse("POST", "/rng"), Some(Route::GetRandomBytes));
        assert_eq!(Route::parse("GET", "/rng"), None);
        assert_eq!(Route::parse("POST", "/keys/k1/explode"), None);
        assert_eq!(Route::parse("POST", &format!("/keys/k1/{v}/release")), None);
        assert!(Route::not_offered("POST", &format!("/keys/k1/{v}/release")).is_some());
        assert!(Route::not_offered("POST", "/keys/k1/release").is_some());
        assert!(Route::not_offered("GET", &format!("/keys/k1/{v}/attestation")).is_some());
        assert_eq!(Route::not_offered("POST", "/keys/k1/explode"), None);
        assert_eq!(Route::parse("GET", "/secrets/s1"), None);
        assert_eq!(
            Route::parse("POST", "/keys/k1//unwrapkey")
                .unwrap()
                .operation(),
            "KeyUnwrap"
        );
    }
}
