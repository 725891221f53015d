//! RSA-OAEP as tokens offer it, named as Azure Key Vault names the same math.

use cryptoki::mechanism::rsa::{PkcsMgfType, PkcsOaepParams, PkcsOaepSource};
use cryptoki::mechanism::{Mechanism, MechanismType};

/// The OAEP variants in order of preference: SHA-256, else SHA-1 for tokens that
/// only have that (SoftHSM 2.6). Both are sound for wrapping a random key.
pub const ALGORITHMS: [&str; 2] = ["RSA-OAEP-256", "RSA-OAEP"];

/// The `CKM_RSA_PKCS_OAEP` mechanism that `algorithm` (`RSA-OAEP-256` or
/// `RSA-OAEP`) names; `None` for any other name.
pub fn mechanism(algorithm: &str) -> Option<Mechanism<'static>> {
    let (hash, mgf) = match algorithm {
        "RSA-OAEP-256" => (MechanismType::SHA256, PkcsMgfType::MGF1_SHA256),
        "RSA-OAEP" => (MechanismType::SHA1, PkcsMgfType::MGF1_SHA1),
        _ => return None,
    };
    Some(Mechanism::RsaPkcsOaep(PkcsOaepParams::new(
        hash,
        mgf,
        PkcsOaepSource::empty(),
    )))
}
