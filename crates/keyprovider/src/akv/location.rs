//! A vault's location, learned with the caller's own token.
//!
//! `pgcmk vault serve` names its management API as the token authority in its
//! bearer challenge (`authorization="https://HOST:PORT/pgcmk"`), and lets any principal
//! with an access policy on a vault read that vault through `GET /admin/vaults`. So the
//! managed identity that uses a key can learn where the key's vault is, without an
//! administrator's credential. A real Azure Key Vault has no such route: its location is
//! an Azure Resource Manager property, which a data-plane credential cannot read, so
//! the location is unknown (`None`) there.

use reqwest::Method;
use serde::Deserialize;

use super::client::AkvClient;
use super::failure;
use crate::KeyError;

/// The path of the authority a `pgcmk vault serve` challenge names.
const PGCMK_AUTHORITY_PATH: &str = "/pgcmk";

#[derive(Deserialize)]
struct VaultList {
    #[serde(default)]
    value: Vec<VaultSummary>,
}

#[derive(Deserialize)]
struct VaultSummary {
    url: String,
    location: String,
}

impl AkvClient {
    /// The location of this client's vault, when the vault service tells it to the
    /// caller (see the module documentation); `None` when it does not. Learns the
    /// vault's challenge first if no request has yet.
    pub fn vault_location(&self) -> Result<Option<String>, KeyError> {
        const OP: &str = "read the vault's location";
        if self.learned_challenge().is_none() {
            // Without a token or body, as every first request: only to learn the challenge.
            let probe = format!("{}/keys", self.vault_url);
            let (status, headers, reply) = self.send(OP, Method::GET, &probe, None, None)?;
            if status != 401 {
                return Err(failure::from_response(OP, status, &reply));
            }
            self.learn_challenge(OP, &headers, status, &reply)?;
        }
        let Some(challenge) = self.learned_challenge() else {
            return Ok(None);
        };
        let Some(management) = management_url(&challenge.authorization, &self.vault_url) else {
            return Ok(None);
        };
        let scope = format!("{management}/.default");
        let url = format!("{management}/admin/vaults");
        let mut retried = false;
        let (status, reply) = loop {
            let auth = self.tokens.authorization(&self.http, &scope)?;
            let (status, _, reply) = self.send(OP, Method::GET, &url, Some(auth), None)?;
            if status == 401 && !retried {
                retried = true;
                self.tokens.invalidate(&scope);
                continue;
            }
            break (status, reply);
        };
        match status {
            200 => {}
            404 => return Ok(None),
            _ => return Err(failure::from_response(OP, status, &reply)),
        }
        let list: VaultList =
            serde_json::from_slice(&reply).map_err(|e| failure::unexpected_body(OP, &e))?;
        Ok(list
            .value
            .into_iter()
            .find(|v| {
                v.url
                    .trim_end_matches('/')
                    .eq_ignore_ascii_case(&self.vault_url)
            })
            .map(|v| v.location))
    }
}

/// The management API's base URL: the challenge's authority when it is a pgcmk vault
/// service on the vault's own host (so no token goes anywhere the vault does not
/// already point to); `None` for any other authority (Azure's login service).
fn management_url(authorization: &str, vault_url: &str) -> Option<String> {
    let origin = authorization.strip_suffix(PGCMK_AUTHORITY_PATH)?;
    let host = |url: &str| {
        let rest = url.strip_prefix("https://")?;
        let authority = rest.split('/').next()?;
        Some(
            authority
                .rsplit_once(':')
                .map_or(authority, |(h, _)| h)
                .to_ascii_lowercase(),
        )
    };
    let origin_host = host(origin)?;
    (origin[8..].find('/').is_none() && Some(origin_host) == host(vault_url))
        .then(|| origin.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn management_url_only_for_a_pgcmk_authority_on_the_vaults_host() {
        assert_eq!(
            management_url("https://127.0.0.1:9000/pgcmk", "https://127.0.0.1:9443"),
            Some("https://127.0.0.1:9000".into())
        );
        for (authority, vault) in [
            // Azure's login service: location is an ARM property.
            (
                "https://login.microsoftonline.com/tenant",
                "https://v.vault.azure.net",
            ),
            // Another host: the token would leave the vault's host.
            ("https://evil.example:9000/pgcmk", "https://127.0.0.1:9443"),
            ("http://127.0.0.1:9000/pgcmk", "https://127.0.0.1:9443"),
            ("https://127.0.0.1:9000/x/pgcmk", "https://127.0.0.1:9443"),
        ] {
            assert_eq!(management_url(authority, vault), None, "{authority}");
        }
    }
}
