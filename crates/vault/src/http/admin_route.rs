//! The main port's routes as one table: method, path template, audit operation name
//! and the role each requires. Requests are parsed against this table and authorized
//! from it in one place ([`authorize`]); `tests/separation_of_duties.rs` walks the
//! same table to prove every denied path.

use crate::identity::Principal;
use crate::vaults::VaultRecord;

/// Who may call a route.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Role {
    /// Anyone; the request carries its own credential (token endpoints) or none (health).
    Anonymous,
    /// Any authenticated principal (answers are filtered to what it may see).
    AnyCaller,
    /// A service administrator, or an administrator of the route's vault, or a
    /// principal holding an access policy on it (the managed identity itself).
    VaultReader,
    /// An administrator of the route's vault (a service administrator is not one by
    /// being a service administrator).
    VaultAdministrator,
    /// A service administrator.
    ServiceAdministrator,
}

/// What a route does.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum AdminOp {
    /// `GET /health`
    Health,
    /// `GET /msi/token`
    ManagedIdentityToken,
    /// `POST /oauth2/token`
    ClientCredentialsToken,
    /// `POST /{tenant}/oauth2/v2.0/token`
    ClientCredentialsTokenV2,
    /// `POST /admin/identities`
    CreateIdentity,
    /// `GET /admin/identities`
    ListIdentities,
    /// `GET /admin/identities/{identity}`
    GetIdentity,
    /// `DELETE /admin/identities/{identity}`
    DeleteIdentity,
    /// `POST /admin/vaults`
    CreateVault,
    /// `GET /admin/vaults`
    ListVaults,
    /// `GET /admin/vaults/{vault}`
    GetVault,
    /// `PATCH /admin/vaults/{vault}`
    UpdateVault,
    /// `PUT /admin/vaults/{vault}/policies/{identity}`
    SetPolicy,
    /// `DELETE /admin/vaults/{vault}/policies/{identity}`
    DeletePolicy,
    /// `GET /admin/audit`
    ListAudit,
    /// `GET /admin/audit/verify`
    VerifyAudit,
}

/// One row of the table.
#[derive(Clone, Copy, Debug)]
pub struct AdminRoute {
    /// What it does.
    pub op: AdminOp,
    /// HTTP method.
    pub method: &'static str,
    /// Path template; `{name}` matches one non-empty segment.
    pub path: &'static str,
    /// The operation name in the audit trail.
    pub operation: &'static str,
    /// Who may call it.
    pub role: Role,
    /// What a refused caller was trying to do ("create vaults").
    pub action: &'static str,
}

const fn route(
    op: AdminOp,
    method: &'static str,
    path: &'static str,
    operation: &'static str,
    role: Role,
    action: &'static str,
) -> AdminRoute {
    AdminRoute {
        op,
        method,
        path,
        operation,
        role,
        action,
    }
}

impl AdminRoute {
    /// Every route of the main port.
    pub const ALL: &'static [AdminRoute] = &[
        route(
            AdminOp::Health,
            "GET",
            "/health",
            "Health",
            Role::Anonymous,
            "check health",
        ),
        route(
            AdminOp::ManagedIdentityToken,
            "GET",
            "/msi/token",
            "ManagedIdentityToken",
            Role::Anonymous,
            "get a token",
        ),
        route(
            AdminOp::ClientCredentialsToken,
            "POST",
            "/oauth2/token",
            "ClientCredentialsToken",
            Role::Anonymous,
            "get a token",
        ),
        route(
            AdminOp::ClientCredentialsTokenV2,
            "POST",
            "/{tenant}/oauth2/v2.0/token",
            "ClientCredentialsToken",
            Role::Anonymous,
            "get a token",
        ),
        route(
            AdminOp::CreateIdentity,
            "POST",
            "/admin/identities",
            "IdentityCreate",
            Role::ServiceAdministrator,
            "create identities",
        ),
        route(
            AdminOp::ListIdentities,
            "GET",
            "/admin/identities",
            "IdentityList",
            Role::ServiceAdministrator,
            "list identities",
        ),
        route(
            AdminOp::GetIdentity,
            "GET",
            "/admin/identities/{identity}",
            "IdentityGet",
            Role::ServiceAdministrator,
            "read identities",
        ),
        route(
            AdminOp::DeleteIdentity,
            "DELETE",
            "/admin/identities/{identity}",
            "IdentityDelete",
            Role::ServiceAdministrator,
            "delete identities",
        ),
        route(
            AdminOp::CreateVault,
            "POST",
            "/admin/vaults",
            "VaultCreate",
            Role::ServiceAdministrator,
            "create vaults",
        ),
        route(
            AdminOp::ListVaults,
            "GET",
            "/admin/vaults",
            "VaultList",
            Role::AnyCaller,
            "list vaults",
        ),
        route(
            AdminOp::GetVault,
            "GET",
            "/admin/vaults/{vault}",
            "VaultGet",
            Role::VaultReader,
            "read vault",
        ),
        route(
            AdminOp::UpdateVault,
            "PATCH",
            "/admin/vaults/{vault}",
            "VaultUpdate",
            Role::VaultAdministrator,
            "manage vault",
        ),
        route(
            AdminOp::SetPolicy,
            "PUT",
            "/admin/vaults/{vault}/policies/{identity}",
            "SetPolicy",
            Role::VaultAdministrator,
            "manage vault",
        ),
        route(
            AdminOp::DeletePolicy,
            "DELETE",
            "/admin/vaults/{vault}/policies/{identity}",
            "DeletePolicy",
            Role::VaultAdministrator,
            "manage vault",
        ),
        route(
            AdminOp::ListAudit,
            "GET",
            "/admin/audit",
            "AuditList",
            Role::ServiceAdministrator,
            "read the audit trail",
        ),
        route(
            AdminOp::VerifyAudit,
            "GET",
            "/admin/audit/verify",
            "AuditVerify",
            Role::ServiceAdministrator,
            "verify the audit trail",
        ),
    ];

    /// The route for `method` and `path`, with the path's `{…}` segments in order.
    pub fn parse(method: &str, path: &str) -> Option<(&'static AdminRoute, Vec<String>)> {
        let segments: Vec<&str> = path.trim_matches('/').split('/').collect();
        Self::ALL
            .iter()
            .filter(|r| r.method == method)
            .find_map(|r| {
                let template: Vec<&str> = r.path.trim_matches('/').split('/').collect();
                if template.len() != segments.len() {
                    return None;
                }
                let mut params = Vec::new();
                for (t, s) in template.iter().zip(&segments) {
                    if t.starts_with('{') {
                        if s.is_empty() {
                            return None;
                        }
                        params.push((*s).to_string());
                    } else if t != s {
                        return None;
                    }
                }
                Some((r, params))
            })
    }

    /// True when the path names a vault as its first parameter.
    pub fn names_vault(&self) -> bool {
        self.path.starts_with("/admin/vaults/{vault}")
    }
}

/// Whether the authenticated `caller` holds `route`'s role on `vault` (the route's
/// vault, for vault routes); if not, what the caller may not do and who may.
pub fn authorize(
    route: &AdminRoute,
    caller: &Principal,
    vault: Option<&VaultRecord>,
) -> Result<(), String> {
    if holds(route.role, caller, vault) {
        return Ok(());
    }
    let name = vault.map(|v| v.name.as_str()).unwrap_or_default();
    Err(match route.role {
        Role::VaultAdministrator => format!(
            "the caller may not {} '{name}': only its administrators may",
            route.action
        ),
        Role::ServiceAdministrator => format!(
            "the caller may not {} (service administrators only)",
            route.action
        ),
        _ => format!("the caller may not {} '{name}'", route.action),
    })
}

/// Whether the authenticated `caller` holds `role` (on `vault`, for vault roles).
pub fn holds(role: Role, caller: &Principal, vault: Option<&VaultRecord>) -> bool {
    let administers = vault.is_some_and(|v| v.administrators.contains(&caller.object_id));
    let holds_policy = vault.is_some_and(|v| v.policies.contains_key(&caller.object_id));
    match role {
        Role::Anonymous | Role::AnyCaller => true,
        Role::VaultReader => caller.service_admin || administers || holds_policy,
        Role::VaultAdministrator => administers,
        Role::ServiceAdministrator => caller.service_admin,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_route_parses_from_its_own_template_and_nothing_else_does() {
        for r in AdminRoute::ALL {
            let path = r
                .path
                .replace("{vault}", "kv1")
                .replace("{identity}", "mi")
                .replace("{tenant}", "t");
            let (found, _) = AdminRoute::parse(r.method, &path).unwrap();
            assert_eq!(found.op, r.op, "{} {}", r.method, r.path);
        }
        let (r, params) = AdminRoute::parse("PUT", "/admin/vaults/kv1/policies/mi").unwrap();
        assert_eq!(
            (r.op, params),
            (AdminOp::SetPolicy, vec!["kv1".into(), "mi".into()])
        );
        for (method, path) in [
            ("DELETE", "/admin/vaults/kv1"),
            ("GET", "/admin/vaults//policies/mi"),
            ("POST", "/msi/token"),
            ("GET", "/admin"),
            ("GET", "/keys"),
        ] {
            assert!(AdminRoute::parse(method, path).is_none(), "{method} {path}");
        }
    }
}
