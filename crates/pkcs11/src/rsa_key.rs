//! RSA key pairs that live in a token, named by `CKA_ID`: generated there (private
//! half sensitive and never extractable), used there to decrypt and sign, and
//! destroyed there. Public-key operations need no token: callers hold `n` and `e`.

use cryptoki::error::{Error as CkError, RvError};
use cryptoki::mechanism::rsa::{PkcsMgfType, PkcsPssParams};
use cryptoki::mechanism::{Mechanism, MechanismType};
use cryptoki::object::{Attribute, AttributeType, ObjectClass, ObjectHandle};
use cryptoki::session::Session;
use pgcmk_crypto::rsa::{oaep_decode, EncryptionAlgorithm, SignatureAlgorithm};
use pgcmk_crypto::SecretBytes;

use crate::error::{classify, TokenError};
use crate::oaep;

/// The public half of a key pair generated in a token.
#[derive(Clone, Debug)]
pub struct RsaPublicParts {
    /// Modulus, big-endian.
    pub n: Vec<u8>,
    /// Public exponent, big-endian.
    pub e: Vec<u8>,
}

/// DER `DigestInfo` prefixes (RFC 8017 §9.2 note 1): `CKM_RSA_PKCS` signs the
/// encoded digest as given, so the algorithm identifier is the caller's to add.
const SHA256_INFO: [u8; 19] = [
    0x30, 0x31, 0x30, 0x0d, 0x06, 0x09, 0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02, 0x01, 0x05,
    0x00, 0x04, 0x20,
];
const SHA384_INFO: [u8; 19] = [
    0x30, 0x41, 0x30, 0x0d, 0x06, 0x09, 0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02, 0x02, 0x05,
    0x00, 0x04, 0x30,
];
const SHA512_INFO: [u8; 19] = [
    0x30, 0x51, 0x30, 0x0d, 0x06, 0x09, 0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02, 0x03, 0x05,
    0x00, 0x04, 0x40,
];

/// Generates an RSA key pair of `bits` labelled `label` with `CKA_ID` `id`, kept
/// in the token: the private half is private, sensitive and never extractable.
pub fn generate(
    session: &Session,
    label: &str,
    id: &[u8],
    bits: u32,
) -> Result<RsaPublicParts, TokenError> {
    let what = format!("generating RSA key pair '{label}' in the token");
    let common = [
        Attribute::Token(true),
        Attribute::Label(label.as_bytes().to_vec()),
        Attribute::Id(id.to_vec()),
    ];
    let mut public = common.to_vec();
    public.extend([
        Attribute::ModulusBits(u64::from(bits).into()),
        Attribute::PublicExponent(vec![1, 0, 1]),
        Attribute::Encrypt(true),
        Attribute::Verify(true),
    ]);
    let mut private = common.to_vec();
    private.extend([
        Attribute::Private(true),
        Attribute::Sensitive(true),
        Attribute::Extractable(false),
        Attribute::Decrypt(true),
        Attribute::Sign(true),
    ]);
    let (public, _) = session
        .generate_key_pair(&Mechanism::RsaPkcsKeyPairGen, &public, &private)
        .map_err(|e| classify(&what, e))?;
    let attributes = session
        .get_attributes(
            public,
            &[AttributeType::Modulus, AttributeType::PublicExponent],
        )
        .map_err(|e| classify(&what, e))?;
    let (mut n, mut e) = (Vec::new(), Vec::new());
    for a in attributes {
        match a {
            Attribute::Modulus(m) => n = m,
            Attribute::PublicExponent(x) => e = x,
            _ => {}
        }
    }
    Ok(RsaPublicParts { n, e })
}

/// The objects of `class` with `CKA_ID` `id`.
fn objects(
    session: &Session,
    class: ObjectClass,
    id: &[u8],
) -> Result<Vec<ObjectHandle>, TokenError> {
    session
        .find_objects(&[Attribute::Class(class), Attribute::Id(id.to_vec())])
        .map_err(|e| classify("finding key objects in the token", e))
}

/// The private key with `CKA_ID` `id`.
fn private_key(session: &Session, id: &[u8]) -> Result<ObjectHandle, TokenError> {
    objects(session, ObjectClass::PRIVATE_KEY, id)?
        .first()
        .copied()
        .ok_or_else(|| TokenError::Denied {
            reason: "the token no longer holds this key version's private key (deleted \
                     from the token): restore it from the token's backup"
                .into(),
        })
}

/// Decrypts `ciphertext` with the private key `id`. `RSA-OAEP-256` falls back to
/// raw RSA in the token and OAEP decoding here where the token's OAEP lacks
/// SHA-256; every decryption failure reads the same.
pub fn decrypt(
    session: &Session,
    id: &[u8],
    algorithm: EncryptionAlgorithm,
    ciphertext: &[u8],
) -> Result<SecretBytes, TokenError> {
    let key = private_key(session, id)?;
    let refused = |e: CkError| match e {
        CkError::Pkcs11(RvError::EncryptedDataInvalid | RvError::EncryptedDataLenRange, _) => {
            TokenError::Invalid {
                reason: "the ciphertext could not be decrypted with this key version and \
                         algorithm"
                    .into(),
            }
        }
        other => classify("decrypting in the token", other),
    };
    let native = match algorithm {
        EncryptionAlgorithm::Rsa1_5 => Mechanism::RsaPkcs,
        oaep_algorithm => oaep::mechanism(oaep_algorithm.name()).ok_or(TokenError::Invalid {
            reason: "no OAEP mechanism for this algorithm".into(),
        })?,
    };
    match session.decrypt(&native, key, ciphertext) {
        Ok(plain) => Ok(SecretBytes::new(plain)),
        Err(CkError::Pkcs11(RvError::MechanismParamInvalid | RvError::ArgumentsBad, _))
            if algorithm != EncryptionAlgorithm::Rsa1_5 =>
        {
            let block = SecretBytes::new(
                session
                    .decrypt(&Mechanism::RsaX509, key, ciphertext)
                    .map_err(refused)?,
            );
            oaep_decode(algorithm, block.expose_secret()).map_err(|_| TokenError::Invalid {
                reason: "the ciphertext could not be decrypted with this key version and \
                         algorithm"
                    .into(),
            })
        }
        Err(e) => Err(refused(e)),
    }
}

/// Signs `digest` with the private key `id`.
pub fn sign(
    session: &Session,
    id: &[u8],
    algorithm: SignatureAlgorithm,
    digest: &[u8],
) -> Result<Vec<u8>, TokenError> {
    if digest.len() != algorithm.digest_len() {
        return Err(TokenError::Invalid {
            reason: format!(
                "a {} digest is {} bytes, not {}",
                algorithm.name(),
                algorithm.digest_len(),
                digest.len()
            ),
        });
    }
    let key = private_key(session, id)?;
    let pss = |hash_alg, mgf| {
        Mechanism::RsaPkcsPss(PkcsPssParams {
            hash_alg,
            mgf,
            s_len: (digest.len() as u64).into(),
        })
    };
    let info = |prefix: &[u8]| [prefix, digest].concat();
    let (mechanism, input) = match algorithm {
        SignatureAlgorithm::Rs256 => (Mechanism::RsaPkcs, info(&SHA256_INFO)),
        SignatureAlgorithm::Rs384 => (Mechanism::RsaPkcs, info(&SHA384_INFO)),
        SignatureAlgorithm::Rs512 => (Mechanism::RsaPkcs, info(&SHA512_INFO)),
        SignatureAlgorithm::Ps256 => (
            pss(MechanismType::SHA256, PkcsMgfType::MGF1_SHA256),
            digest.to_vec(),
        ),
        SignatureAlgorithm::Ps384 => (
            pss(MechanismType::SHA384, PkcsMgfType::MGF1_SHA384),
            digest.to_vec(),
        ),
        SignatureAlgorithm::Ps512 => (
            pss(MechanismType::SHA512, PkcsMgfType::MGF1_SHA512),
            digest.to_vec(),
        ),
    };
    session
        .sign(&mechanism, key, &input)
        .map_err(|e| classify("signing in the token", e))
}

/// Destroys both halves of the key pair `id`; true when there was anything to
/// destroy (a pair already gone is not an error: purge may be retried).
pub fn destroy(session: &Session, id: &[u8]) -> Result<bool, TokenError> {
    let mut destroyed = false;
    for class in [ObjectClass::PRIVATE_KEY, ObjectClass::PUBLIC_KEY] {
        for object in objects(session, class, id)? {
            session
                .destroy_object(object)
                .map_err(|e| classify("destroying a key object in the token", e))?;
            destroyed = true;
        }
    }
    Ok(destroyed)
}
