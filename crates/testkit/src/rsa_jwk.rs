//! An RSA private key's JWK components, read from its PKCS#8 DER export: what a
//! customer's key-management tool produces for a bring-your-own-key import. Tests
//! only: the vault never exports private keys.

use pgcmk_crypto::rsa::{RsaPrivateComponents, RsaPrivateKey};
use pgcmk_crypto::SecretBytes;

/// The JWK components (`n`, `e`, `d`, `p`, `q`, `dp`, `dq`, `qi`) of `key`.
pub fn components(key: &RsaPrivateKey) -> RsaPrivateComponents {
    let der = key.to_pkcs8_der().expect("PKCS#8 export");
    let unexpected = "unexpected PKCS#8 encoding";
    // PrivateKeyInfo ::= SEQUENCE { version, algorithm, OCTET STRING RSAPrivateKey }
    let (info, _) = der_read(der.expose_secret(), 0x30).expect(unexpected);
    let (_, rest) = der_read(info, 0x02).expect(unexpected);
    let (_, rest) = der_read(rest, 0x30).expect(unexpected);
    let (octets, _) = der_read(rest, 0x04).expect(unexpected);
    // RSAPrivateKey ::= SEQUENCE { version, n, e, d, p, q, dp, dq, qi }
    let (mut fields, _) = der_read(octets, 0x30).expect(unexpected);
    let mut ints = Vec::with_capacity(9);
    for _ in 0..9 {
        let (value, rest) = der_read(fields, 0x02).expect(unexpected);
        let start = value.iter().position(|&b| b != 0).unwrap_or(value.len());
        ints.push(SecretBytes::new(value[start..].to_vec()));
        fields = rest;
    }
    let mut it = ints.into_iter().skip(1);
    let mut next = || it.next().expect(unexpected);
    RsaPrivateComponents {
        n: next().expose_secret().to_vec(),
        e: next().expose_secret().to_vec(),
        d: next(),
        p: next(),
        q: next(),
        dp: next(),
        dq: next(),
        qi: next(),
    }
}

/// Reads one DER element with the expected tag: (contents, rest).
fn der_read(input: &[u8], tag: u8) -> Option<(&[u8], &[u8])> {
    let (&t, rest) = input.split_first()?;
    if t != tag {
        return None;
    }
    let (&first, rest) = rest.split_first()?;
    let (len, rest) = if first < 0x80 {
        (usize::from(first), rest)
    } else {
        let n = usize::from(first & 0x7f);
        if n == 0 || n > 4 || rest.len() < n {
            return None;
        }
        let len = rest[..n]
            .iter()
            .fold(0usize, |acc, b| (acc << 8) | usize::from(*b));
        (len, &rest[n..])
    };
    (rest.len() >= len).then(|| (&rest[..len], &rest[len..]))
}

#[cfg(test)]
mod tests {
    use super::*;
    use pgcmk_crypto::rsa::{EncryptionAlgorithm, RsaKeySize};

    #[test]
    fn jwk_components_round_trip_and_inconsistent_ones_are_refused() {
        let k = RsaPrivateKey::generate(RsaKeySize::Bits2048).unwrap();
        let c = components(&k);
        assert_eq!(c.n, k.public_key().n());
        assert_eq!(c.e, k.public_key().e());
        assert_eq!(c.p.len() + c.q.len(), 256);
        let again = RsaPrivateKey::from_components(&c).unwrap();
        let ct = k
            .public_key()
            .encrypt(EncryptionAlgorithm::RsaOaep256, b"x")
            .unwrap();
        assert_eq!(
            again
                .decrypt(EncryptionAlgorithm::RsaOaep256, &ct)
                .unwrap()
                .expose_secret(),
            b"x"
        );
        let mut broken = components(&k);
        broken.d = SecretBytes::new(vec![3; 256]);
        assert!(RsaPrivateKey::from_components(&broken).is_err());
        assert!(!format!("{c:?}").contains(&format!("{:?}", c.d.expose_secret())));
    }
}
