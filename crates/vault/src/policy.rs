//! Key permissions with Azure Key Vault's names, and access policy checks.

use serde::{Deserialize, Serialize};

macro_rules! permissions {
    ($($variant:ident => $name:literal),* $(,)?) => {
        /// One key permission, named as in Azure Key Vault access policies.
        #[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
        pub enum Permission {
            $(
                #[doc = concat!("`", $name, "`")]
                #[serde(rename = $name)]
                $variant,
            )*
        }

        impl Permission {
            /// Every key permission.
            pub const ALL: &'static [Permission] = &[$(Permission::$variant),*];

            /// The Azure name.
            pub fn name(self) -> &'static str {
                match self { $(Permission::$variant => $name),* }
            }
        }
    };
}

permissions! {
    Get => "get",
    List => "list",
    Create => "create",
    Update => "update",
    Import => "import",
    Delete => "delete",
    Recover => "recover",
    Backup => "backup",
    Restore => "restore",
    Decrypt => "decrypt",
    Encrypt => "encrypt",
    UnwrapKey => "unwrapKey",
    WrapKey => "wrapKey",
    Verify => "verify",
    Sign => "sign",
    Purge => "purge",
    Rotate => "rotate",
    GetRotationPolicy => "getrotationpolicy",
    SetRotationPolicy => "setrotationpolicy",
    // Managed HSM's name for Get Random Bytes (`POST /rng`); access-policy vaults
    // in Azure have no permission for it, and deny by default says ask for one.
    Rng => "rng",
}

impl Permission {
    /// Parses a permission name, case-insensitively as Azure does.
    pub fn parse(name: &str) -> Option<Self> {
        Self::ALL
            .iter()
            .copied()
            .find(|p| p.name().eq_ignore_ascii_case(name))
    }
}

/// Parses a list of permission names; `all` grants every permission. Sorted, no duplicates.
pub fn parse_permissions(names: &[String]) -> Result<Vec<Permission>, String> {
    let mut out = Vec::new();
    for name in names {
        if name.eq_ignore_ascii_case("all") {
            out.extend_from_slice(Permission::ALL);
            continue;
        }
        match Permission::parse(name) {
            Some(p) => out.push(p),
            None => {
                let known: Vec<&str> = Permission::ALL.iter().map(|p| p.name()).collect();
                return Err(format!(
                    "unknown key permission '{name}': use one of {} or all",
                    known.join(", ")
                ));
            }
        }
    }
    out.sort();
    out.dedup();
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_parse_case_insensitively_and_unknown_names_are_refused() {
        let p = parse_permissions(&[
            "get".into(),
            "WRAPKEY".into(),
            "unwrapKey".into(),
            "get".into(),
        ])
        .unwrap();
        assert_eq!(
            p,
            vec![Permission::Get, Permission::UnwrapKey, Permission::WrapKey]
        );
        assert_eq!(parse_permissions(&["all".into()]).unwrap().len(), 20);
        let err = parse_permissions(&["read".into()]).unwrap_err();
        assert!(err.contains("unknown key permission 'read'"), "{err}");
        assert_eq!(
            serde_json::to_string(&Permission::UnwrapKey).unwrap(),
            "\"unwrapKey\""
        );
    }
}
