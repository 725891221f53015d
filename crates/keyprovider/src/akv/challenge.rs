//! The vault's 401 bearer challenge, which names the token audience:
//! `WWW-Authenticate: Bearer authorization="https://login/tenant", resource="https://vault"`.
//!
//! As the Azure SDK does, the client learns the audience from the vault instead of
//! being configured with it, and refuses an audience that is not the vault itself or a
//! parent domain of it, so that a rogue URL cannot collect tokens for another service.

use crate::KeyError;

/// A parsed bearer challenge.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BearerChallenge {
    /// The authorization server (`authorization` or `authorization_uri`).
    pub authorization: String,
    /// The token scope to ask for: the challenge's `scope`, or `resource` + `/.default`.
    pub scope: String,
}

impl BearerChallenge {
    /// Parses a `WWW-Authenticate` header value; `None` when it is not a usable
    /// bearer challenge (no scheme, no authorization server or no audience).
    pub fn parse(header: &str) -> Option<Self> {
        let (scheme, params) = header.trim().split_once(char::is_whitespace)?;
        if !scheme.eq_ignore_ascii_case("bearer") {
            return None;
        }
        let mut authorization = None;
        let mut resource = None;
        let mut scope = None;
        for item in params.split(',') {
            let Some((key, value)) = item.split_once('=') else {
                continue;
            };
            let value = value.trim().trim_matches('"').to_string();
            match key.trim().to_ascii_lowercase().as_str() {
                "authorization" | "authorization_uri" => authorization = Some(value),
                "resource" => resource = Some(value),
                "scope" => scope = Some(value),
                _ => {}
            }
        }
        let scope = match (scope, resource) {
            (Some(s), _) if !s.is_empty() => s,
            (_, Some(r)) if !r.is_empty() => format!("{}/.default", r.trim_end_matches('/')),
            _ => return None,
        };
        Some(Self {
            authorization: authorization.filter(|a| !a.is_empty())?,
            scope,
        })
    }

    /// The audience (resource) the token must be issued for: the scope without `/.default`.
    pub fn resource(&self) -> &str {
        self.scope.strip_suffix("/.default").unwrap_or(&self.scope)
    }

    /// Refuses an audience that is neither the vault's own authority nor a parent
    /// domain of the vault's host.
    pub fn verify_for(&self, vault_url: &str) -> Result<(), KeyError> {
        let resource_authority = authority(self.resource());
        let vault_authority = authority(vault_url);
        let vault_host = host(vault_authority);
        let ok = !resource_authority.is_empty()
            && (resource_authority.eq_ignore_ascii_case(vault_authority)
                || vault_host.to_ascii_lowercase().ends_with(&format!(
                    ".{}",
                    host(resource_authority).to_ascii_lowercase()
                )));
        if ok {
            Ok(())
        } else {
            Err(KeyError::Invalid {
                reason: format!(
                    "the vault at {vault_url} asked for a token for '{}', which is not that vault: \
                     check the vault URL",
                    self.resource()
                ),
            })
        }
    }
}

/// `host[:port]` of an absolute URL (or the input itself when it has no scheme).
fn authority(url: &str) -> &str {
    let rest = url.split_once("://").map_or(url, |(_, r)| r);
    let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let authority = &rest[..end];
    // A default HTTPS port names the same authority as none at all.
    authority.strip_suffix(":443").unwrap_or(authority)
}

/// The host part of `host[:port]`, keeping bracketed IPv6 literals whole.
fn host(authority: &str) -> &str {
    if authority.starts_with('[') {
        return authority
            .split_once(']')
            .map_or(authority, |(h, _)| &authority[..=h.len()]);
    }
    authority.rsplit_once(':').map_or(authority, |(h, _)| h)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_resource_and_authorization() {
        let c = BearerChallenge::parse(
            r#"Bearer authorization="https://127.0.0.1:9000/tenant", resource="https://127.0.0.1:9443""#,
        )
        .unwrap();
        assert_eq!(c.authorization, "https://127.0.0.1:9000/tenant");
        assert_eq!(c.scope, "https://127.0.0.1:9443/.default");
        assert_eq!(c.resource(), "https://127.0.0.1:9443");
    }

    #[test]
    fn scope_wins_over_resource_and_authorization_uri_is_accepted() {
        let c = BearerChallenge::parse(
            r#"bearer authorization_uri="https://login/t",resource="https://r",scope="https://vault.azure.net/.default""#,
        )
        .unwrap();
        assert_eq!(c.scope, "https://vault.azure.net/.default");
        assert_eq!(c.resource(), "https://vault.azure.net");
    }

    #[test]
    fn rejects_non_bearer_or_incomplete_challenges() {
        for header in [
            r#"Basic realm="x""#,
            r#"Bearer resource="https://v""#,
            r#"Bearer authorization="https://login/t""#,
            "Bearer",
            "",
        ] {
            assert_eq!(BearerChallenge::parse(header), None, "{header}");
        }
    }

    #[test]
    fn audience_must_be_the_vault_or_its_parent_domain() {
        let challenge = |resource: &str| {
            BearerChallenge::parse(&format!(
                r#"Bearer authorization="https://l/t", resource="{resource}""#
            ))
            .unwrap()
        };
        assert!(challenge("https://127.0.0.1:9443")
            .verify_for("https://127.0.0.1:9443")
            .is_ok());
        assert!(challenge("https://vault.azure.net")
            .verify_for("https://myvault.vault.azure.net")
            .is_ok());
        assert!(challenge("https://v.example:443")
            .verify_for("https://v.example")
            .is_ok());
        let err = challenge("https://127.0.0.1:9444")
            .verify_for("https://127.0.0.1:9443")
            .unwrap_err();
        assert!(err.to_string().contains("not that vault"), "{err}");
        assert!(challenge("https://evil.example")
            .verify_for("https://myvault.vault.azure.net")
            .is_err());
        assert!(challenge("https://net")
            .verify_for("https://vaultnet")
            .is_err());
    }
}
