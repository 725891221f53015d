//! A managed identity's credential file, as the DBA hands it to `pgcmk server create`.

use pgcmk_crypto::SecretBytes;

/// Reads a managed identity's header secret from its credential file: the JSON
/// that `pgcmk identity create --credential-file` writes (field `identity_header`,
/// `client_secret` or `secret`), or a file holding just the secret (such as a
/// PKCS#11 token user's PIN). A file that other users may read is refused: the
/// secret in it is as good as theirs.
pub fn read_identity_secret(path: &std::path::Path) -> Result<SecretBytes, crate::Error> {
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(path)
        .map_err(|e| {
            crate::Error::io(format!("reading the credential file {}", path.display()), e)
        })?
        .permissions()
        .mode();
    if mode & 0o077 != 0 {
        return Err(crate::Error::BadRequest(format!(
            "the credential file {} can be read or written by other users (mode {:o}): \
             make it private with `chmod 600 {}`",
            path.display(),
            mode & 0o777,
            path.display()
        )));
    }
    let bytes = SecretBytes::new(std::fs::read(path).map_err(|e| {
        crate::Error::io(format!("reading the credential file {}", path.display()), e)
    })?);
    let text = bytes.expose_secret().trim_ascii();
    if text.first() != Some(&b'{') {
        return Ok(SecretBytes::new(text.to_vec()));
    }
    let json: serde_json::Value = serde_json::from_slice(text).map_err(|_| {
        crate::Error::BadRequest(format!(
            "the credential file {} is not valid JSON",
            path.display()
        ))
    })?;
    ["identity_header", "client_secret", "secret"]
        .iter()
        .find_map(|k| json.get(*k).and_then(|v| v.as_str()))
        .map(|s| SecretBytes::new(s.as_bytes().to_vec()))
        .ok_or_else(|| {
            crate::Error::BadRequest(format!(
                "the credential file {} holds no identity secret (identity_header)",
                path.display()
            ))
        })
}

/// The client id to ask tokens for when the DBA names `identity` (by name, object id
/// or client id) and hands over its credential file. Checks that the file belongs
/// to that identity; a file holding only the secret leaves `identity` as given.
pub fn resolve_client_id(
    identity: &str,
    credential_file: &std::path::Path,
) -> Result<String, crate::Error> {
    let text = std::fs::read(credential_file).map_err(|e| {
        crate::Error::io(
            format!("reading the credential file {}", credential_file.display()),
            e,
        )
    })?;
    let text = SecretBytes::new(text);
    let Ok(json) = serde_json::from_slice::<serde_json::Value>(text.expose_secret()) else {
        return Ok(identity.to_string());
    };
    let field = |k: &str| json.get(k).and_then(|v| v.as_str());
    let Some(client_id) = field("client_id") else {
        return Ok(identity.to_string());
    };
    if [field("name"), field("object_id"), Some(client_id)].contains(&Some(identity)) {
        Ok(client_id.to_string())
    } else {
        Err(crate::Error::BadRequest(format!(
            "the credential file {} belongs to identity '{}', not '{identity}': pass that \
             identity's credential file",
            credential_file.display(),
            field("name").unwrap_or(client_id)
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identity_names_resolve_to_the_credential_client_id() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("mi.credential");
        std::fs::write(
            &file,
            r#"{"name":"orders-mi","object_id":"oid-1","client_id":"cid-1","kind":"managed","client_secret":"hdr"}"#,
        )
        .unwrap();
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o600)).unwrap();
        for given in ["orders-mi", "oid-1", "cid-1"] {
            assert_eq!(resolve_client_id(given, &file).unwrap(), "cid-1");
        }
        let err = resolve_client_id("other-mi", &file)
            .unwrap_err()
            .to_string();
        assert!(err.contains("belongs to identity 'orders-mi'"), "{err}");
        assert_eq!(read_identity_secret(&file).unwrap().expose_secret(), b"hdr");
        let raw = dir.path().join("raw");
        std::fs::write(&raw, "just-the-secret\n").unwrap();
        let err = read_identity_secret(&raw).unwrap_err().to_string();
        assert!(
            err.contains("chmod 600") && err.contains("mode 644"),
            "{err}"
        );
        std::fs::set_permissions(&raw, std::fs::Permissions::from_mode(0o600)).unwrap();
        assert_eq!(resolve_client_id("cid-9", &raw).unwrap(), "cid-9");
        assert_eq!(
            read_identity_secret(&raw).unwrap().expose_secret(),
            b"just-the-secret"
        );
    }
}
