//! The phone's side of the key: generation and the device signatures of spec 5.4. Used by the
//! phone simulator and the load generator, never by the server to sign anything.
//!
//! RSA device signatures are a PKCS#1 v1.5 type-1 block over the bare hash (no DigestInfo);
//! only the `rsa` crate offers that ("unprefixed"). EC signatures are DER ECDSA over a
//! prehash whose length need not match the curve (SHA-1 on P-384, SHA-512 on P-256).

use std::fmt;

use aws_lc_rs::encoding::{AsDer, Pkcs8V1Der};
use aws_lc_rs::rsa::{KeyPair as AwsRsaKeyPair, KeySize};
use aws_lc_rs::signature::{
    EcdsaKeyPair, EcdsaSigningAlgorithm, ECDSA_P256_SHA256_ASN1_SIGNING,
    ECDSA_P384_SHA384_ASN1_SIGNING, ECDSA_P521_SHA512_ASN1_SIGNING,
};
use p256::pkcs8::{DecodePrivateKey as _, EncodePublicKey as _};
use rsa::pkcs8::{DecodePrivateKey as _, EncodePrivateKey as _, EncodePublicKey as _};
use rsa::traits::PublicKeyParts;
use rsa::{Pkcs1v15Sign, RsaPrivateKey};
use sha1::Sha1;
use sha2::{Digest, Sha512};

use super::signer::SecretBytes;
use capf_model::keyspec::{Curve, KeySpec, RSA_SIZES};

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PhoneKeyError {
    #[error("unsupported phone key {0}: RSA 1024/2048/3072/4096 or EC P-256/P-384/P-521")]
    Unsupported(KeySpec),
    #[error("key generation failed")]
    Generation,
    #[error("not a PKCS#8 RSA or EC P-256/P-384/P-521 private key")]
    BadKey,
    #[error("signing failed")]
    Sign,
}

enum Inner {
    Rsa(Box<RsaPrivateKey>),
    P256(p256::ecdsa::SigningKey),
    P384(p384::ecdsa::SigningKey),
    P521(p521::ecdsa::SigningKey),
}

/// A phone's private key.
pub struct PhoneKey {
    inner: Inner,
    spec: KeySpec,
    pkcs8: SecretBytes,
}

impl fmt::Debug for PhoneKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PhoneKey")
            .field("spec", &self.spec)
            .finish_non_exhaustive()
    }
}

impl PhoneKey {
    /// Generates a key: RSA 1024, 2048, 3072, 4096 or EC P-256, P-384, P-521.
    pub fn generate(spec: KeySpec) -> Result<PhoneKey, PhoneKeyError> {
        let pkcs8 = match spec {
            KeySpec::Rsa(1024) => {
                // aws-lc-rs does not generate keys below 2048 bits.
                let key = RsaPrivateKey::new(&mut rand::rngs::OsRng, 1024)
                    .map_err(|_| PhoneKeyError::Generation)?;
                let doc = key.to_pkcs8_der().map_err(|_| PhoneKeyError::Generation)?;
                SecretBytes::new(doc.as_bytes().to_vec())
            }
            KeySpec::Rsa(bits) => {
                let size = match bits {
                    2048 => KeySize::Rsa2048,
                    3072 => KeySize::Rsa3072,
                    4096 => KeySize::Rsa4096,
                    _ => return Err(PhoneKeyError::Unsupported(spec)),
                };
                let kp = AwsRsaKeyPair::generate(size).map_err(|_| PhoneKeyError::Generation)?;
                let der: Pkcs8V1Der<'static> =
                    kp.as_der().map_err(|_| PhoneKeyError::Generation)?;
                SecretBytes::new(der.as_ref().to_vec())
            }
            KeySpec::Ec(curve) => {
                let alg: &'static EcdsaSigningAlgorithm = match curve {
                    Curve::P256 => &ECDSA_P256_SHA256_ASN1_SIGNING,
                    Curve::P384 => &ECDSA_P384_SHA384_ASN1_SIGNING,
                    Curve::P521 => &ECDSA_P521_SHA512_ASN1_SIGNING,
                };
                let kp = EcdsaKeyPair::generate(alg).map_err(|_| PhoneKeyError::Generation)?;
                let doc = kp.to_pkcs8v1().map_err(|_| PhoneKeyError::Generation)?;
                SecretBytes::new(doc.as_ref().to_vec())
            }
        };
        let key = PhoneKey::from_pkcs8_der(pkcs8)?;
        if key.spec != spec {
            return Err(PhoneKeyError::Generation);
        }
        Ok(key)
    }

    /// Loads an unencrypted PKCS#8 PEM key (`PRIVATE KEY`).
    pub fn from_pem(pem_text: &str) -> Result<PhoneKey, PhoneKeyError> {
        let blocks = pem::parse_many(pem_text).map_err(|_| PhoneKeyError::BadKey)?;
        let block = blocks
            .into_iter()
            .find(|b| b.tag() == "PRIVATE KEY")
            .ok_or(PhoneKeyError::BadKey)?;
        PhoneKey::from_pkcs8_der(SecretBytes::new(block.into_contents()))
    }

    fn from_pkcs8_der(pkcs8: SecretBytes) -> Result<PhoneKey, PhoneKeyError> {
        let der = pkcs8.as_bytes();
        let (inner, spec) = if let Ok(k) = RsaPrivateKey::from_pkcs8_der(der) {
            let bits = u16::try_from(k.n().bits()).map_err(|_| PhoneKeyError::BadKey)?;
            if !RSA_SIZES.contains(&bits) {
                return Err(PhoneKeyError::Unsupported(KeySpec::Rsa(bits)));
            }
            (Inner::Rsa(Box::new(k)), KeySpec::Rsa(bits))
        } else if let Ok(k) = p256::ecdsa::SigningKey::from_pkcs8_der(der) {
            (Inner::P256(k), KeySpec::Ec(Curve::P256))
        } else if let Ok(k) = p384::ecdsa::SigningKey::from_pkcs8_der(der) {
            (Inner::P384(k), KeySpec::Ec(Curve::P384))
        } else if let Ok(k) = p521::ecdsa::SigningKey::from_pkcs8_der(der) {
            (Inner::P521(k), KeySpec::Ec(Curve::P521))
        } else {
            return Err(PhoneKeyError::BadKey);
        };
        Ok(PhoneKey { inner, spec, pkcs8 })
    }

    /// The public key as DER SubjectPublicKeyInfo (what goes into KEY_GENERATE_RESPONSE).
    pub fn spki_der(&self) -> Vec<u8> {
        // Encoding a public key we hold cannot fail short of allocation failure; an empty
        // result would be refused by the server's key checks rather than go unnoticed.
        let encoded = match &self.inner {
            Inner::Rsa(k) => k
                .to_public_key()
                .to_public_key_der()
                .map(|d| d.as_bytes().to_vec())
                .ok(),
            Inner::P256(k) => k
                .verifying_key()
                .to_public_key_der()
                .map(|d| d.to_vec())
                .ok(),
            Inner::P384(k) => k
                .verifying_key()
                .to_public_key_der()
                .map(|d| d.to_vec())
                .ok(),
            Inner::P521(k) => k
                .verifying_key()
                .to_public_key_der()
                .map(|d| d.to_vec())
                .ok(),
        };
        encoded.unwrap_or_default()
    }

    /// The private key as PKCS#8 PEM (what the simulator stores).
    pub fn to_pkcs8_pem(&self) -> String {
        pem::encode_config(
            &pem::Pem::new("PRIVATE KEY", self.pkcs8.as_bytes().to_vec()),
            pem::EncodeConfig::new().set_line_ending(pem::LineEnding::LF),
        )
    }

    pub fn spec(&self) -> KeySpec {
        self.spec
    }

    /// Device signature over SHA-1(message) (SIGNED_DATA, spec 5.4).
    pub fn sign_sha1(&self, message: &[u8]) -> Result<Vec<u8>, PhoneKeyError> {
        self.sign_prehash(&Sha1::digest(message))
    }

    /// Device signature over SHA-512(message) (SHA2_SIGNED_DATA, spec 5.4).
    pub fn sign_sha512(&self, message: &[u8]) -> Result<Vec<u8>, PhoneKeyError> {
        self.sign_prehash(&Sha512::digest(message))
    }

    fn sign_prehash(&self, hash: &[u8]) -> Result<Vec<u8>, PhoneKeyError> {
        use p256::ecdsa::signature::hazmat::PrehashSigner;
        match &self.inner {
            Inner::Rsa(k) => k
                .sign_with_rng(&mut rand::rngs::OsRng, Pkcs1v15Sign::new_unprefixed(), hash)
                .map_err(|_| PhoneKeyError::Sign),
            Inner::P256(k) => {
                let sig: p256::ecdsa::DerSignature =
                    k.sign_prehash(hash).map_err(|_| PhoneKeyError::Sign)?;
                Ok(sig.as_bytes().to_vec())
            }
            Inner::P384(k) => {
                let sig: p384::ecdsa::DerSignature =
                    k.sign_prehash(hash).map_err(|_| PhoneKeyError::Sign)?;
                Ok(sig.as_bytes().to_vec())
            }
            Inner::P521(k) => {
                let sig: p521::ecdsa::DerSignature =
                    k.sign_prehash(hash).map_err(|_| PhoneKeyError::Sign)?;
                Ok(sig.as_bytes().to_vec())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use p256::ecdsa::signature::hazmat::PrehashVerifier;
    use p256::pkcs8::DecodePublicKey as _;
    use rsa::pkcs8::DecodePublicKey as _;
    use rsa::RsaPublicKey;

    /// Verifies a device signature the way the server must (spec 5.4).
    fn verify(spki: &[u8], hash: &[u8], sig: &[u8]) -> bool {
        if let Ok(k) = RsaPublicKey::from_public_key_der(spki) {
            return k.verify(Pkcs1v15Sign::new_unprefixed(), hash, sig).is_ok();
        }
        if let Ok(k) = p256::ecdsa::VerifyingKey::from_public_key_der(spki) {
            let Ok(s) = p256::ecdsa::DerSignature::from_bytes(sig) else {
                return false;
            };
            return k.verify_prehash(hash, &s).is_ok();
        }
        if let Ok(k) = p384::ecdsa::VerifyingKey::from_public_key_der(spki) {
            let Ok(s) = p384::ecdsa::DerSignature::from_bytes(sig) else {
                return false;
            };
            return k.verify_prehash(hash, &s).is_ok();
        }
        if let Ok(k) = p521::ecdsa::VerifyingKey::from_public_key_der(spki) {
            let Ok(s) = p521::ecdsa::DerSignature::from_bytes(sig) else {
                return false;
            };
            return k.verify_prehash(hash, &s).is_ok();
        }
        false
    }

    #[test]
    fn every_spec_generates_round_trips_and_signs() {
        let specs = [
            KeySpec::Rsa(1024),
            KeySpec::Rsa(2048),
            KeySpec::Ec(Curve::P256),
            KeySpec::Ec(Curve::P384),
            KeySpec::Ec(Curve::P521),
        ];
        let msg = b"SEP001122334455\0certificate bytes";
        for spec in specs {
            let key = PhoneKey::generate(spec).unwrap();
            assert_eq!(key.spec(), spec);
            assert_eq!(crate::ca::describe_public_key(&key.spki_der()), Ok(spec));

            let again = PhoneKey::from_pem(&key.to_pkcs8_pem()).unwrap();
            assert_eq!(again.spec(), spec);
            assert_eq!(again.spki_der(), key.spki_der());

            let spki = key.spki_der();
            let sha1 = Sha1::digest(msg);
            let sha512 = Sha512::digest(msg);
            let s1 = key.sign_sha1(msg).unwrap();
            let s512 = key.sign_sha512(msg).unwrap();
            assert!(verify(&spki, &sha1, &s1), "{spec} sha1");
            assert!(verify(&spki, &sha512, &s512), "{spec} sha512");
            assert!(!verify(&spki, &sha512, &s1), "{spec} cross");
            assert!(!verify(&spki, &Sha1::digest(b"other"), &s1), "{spec} other");
            if let KeySpec::Rsa(bits) = spec {
                assert_eq!(s1.len(), usize::from(bits / 8));
            } else {
                assert_eq!(s1[0], 0x30, "DER SEQUENCE");
            }
            assert!(!format!("{key:?}").contains("PRIVATE"));
        }
    }

    #[test]
    fn rsa_signature_is_the_bare_type1_block() {
        let key = PhoneKey::generate(KeySpec::Rsa(1024)).unwrap();
        let msg = b"M";
        let sig = key.sign_sha1(msg).unwrap();
        // Recover EM = S^e mod n and check the exact block layout of spec 5.4.
        let public = RsaPublicKey::from_public_key_der(&key.spki_der()).unwrap();
        let s = rsa::BigUint::from_bytes_be(&sig);
        let em = s.modpow(public.e(), public.n()).to_bytes_be();
        // Leading 0x00 is dropped by to_bytes_be: 127 bytes for a 128-byte modulus.
        assert_eq!(em.len(), 127);
        assert_eq!(em[0], 0x01);
        let hash = Sha1::digest(msg);
        let pad_len = 127 - 1 - 1 - hash.len();
        assert!(em[1..1 + pad_len].iter().all(|b| *b == 0xff));
        assert_eq!(em[1 + pad_len], 0x00);
        assert_eq!(&em[2 + pad_len..], &hash[..]);
    }

    #[test]
    fn vector_device_keys_load() {
        let cases = [
            ("01-SEP001122334455-rsa2048.pem", KeySpec::Rsa(2048)),
            ("02-SEP00112233AABB-p256.pem", KeySpec::Ec(Curve::P256)),
            ("04-SEP001122334455-rsa3072.pem", KeySpec::Rsa(3072)),
            ("05-SEP00112233AABB-p384.pem", KeySpec::Ec(Curve::P384)),
        ];
        for (file, spec) in cases {
            let path = format!(
                "{}/../../tests/vectors/device/{file}",
                env!("CARGO_MANIFEST_DIR")
            );
            let text = std::fs::read_to_string(path).unwrap();
            let key = PhoneKey::from_pem(&text).unwrap();
            assert_eq!(key.spec(), spec);
            // The key belongs to the LSC in the same file.
            let cert = pem::parse_many(&text)
                .unwrap()
                .into_iter()
                .find(|b| b.tag() == "CERTIFICATE")
                .unwrap();
            let fields = crate::ca::cert_fields::parse(cert.contents()).unwrap();
            assert_eq!(fields.spki, key.spki_der().as_slice(), "{file}");
        }
    }

    #[test]
    fn refuses_bad_input() {
        assert_eq!(
            PhoneKey::from_pem("nothing").unwrap_err(),
            PhoneKeyError::BadKey
        );
        let junk = pem::encode(&pem::Pem::new("PRIVATE KEY", vec![1, 2, 3]));
        assert_eq!(
            PhoneKey::from_pem(&junk).unwrap_err(),
            PhoneKeyError::BadKey
        );
        assert!(matches!(
            PhoneKey::generate(KeySpec::Rsa(1536)),
            Err(PhoneKeyError::Unsupported(_))
        ));
    }
}
