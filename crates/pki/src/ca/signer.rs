//! The signing seam: whatever signs certificates (a key in memory today, perhaps an HSM later)
//! implements [`Signer`]. [`KeySigner`] is the in-memory implementation over aws-lc-rs.
//!
//! Keys are parsed and validated once, when the signer is built; `sign` only signs. Re-parsing
//! a PKCS#8 key per signature costs more than the signature itself.

use std::fmt;

use aws_lc_rs::encoding::{AsDer, Pkcs8V1Der, PublicKeyX509Der};
use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::rsa::{KeyPair as RsaKeyPair, KeySize};
use aws_lc_rs::signature::{
    EcdsaKeyPair, EcdsaSigningAlgorithm, KeyPair as _, ECDSA_P256_SHA256_ASN1_SIGNING,
    ECDSA_P384_SHA384_ASN1_SIGNING, ECDSA_P521_SHA512_ASN1_SIGNING, RSA_PKCS1_SHA256,
};

use super::der_io;

/// Something that signs certificates.
pub trait Signer: Send + Sync + fmt::Debug {
    /// DER of the AlgorithmIdentifier of signatures this signer makes (sha256WithRSAEncryption
    /// with NULL params, or ecdsa-with-SHAxxx without params).
    fn algorithm_der(&self) -> &[u8];
    /// Signs `message` (the hash is computed by the signer).
    fn sign(&self, message: &[u8]) -> Result<Vec<u8>, SignError>;
    /// DER SubjectPublicKeyInfo of the signing key.
    fn public_key_spki_der(&self) -> &[u8];
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SignError {
    #[error("the signing operation failed")]
    Failed,
}

/// Why a private key could not be loaded or generated. Never carries key material.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyError {
    #[error("no private key found (expected a PEM block PRIVATE KEY, RSA PRIVATE KEY or EC PRIVATE KEY)")]
    NotFound,
    #[error("private key is not a usable RSA (2048-8192 bits) or EC P-256/P-384/P-521 key: {0}")]
    Rejected(&'static str),
    #[error("key generation failed")]
    Generation,
}

/// Private key bytes that are wiped when dropped and never printed.
pub struct SecretBytes(Vec<u8>);

impl SecretBytes {
    pub fn new(bytes: Vec<u8>) -> SecretBytes {
        SecretBytes(bytes)
    }

    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }
}

impl Drop for SecretBytes {
    fn drop(&mut self) {
        self.0.fill(0);
        // Keeps the wipe from being optimised away as a dead store (best effort).
        std::hint::black_box(&self.0);
    }
}

impl fmt::Debug for SecretBytes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SecretBytes(<{} bytes redacted>)", self.0.len())
    }
}

enum KeyKind {
    Rsa(RsaKeyPair),
    Ec(EcdsaKeyPair),
}

/// A private key held in memory, ready to sign.
pub struct KeySigner {
    key: KeyKind,
    algorithm_der: Vec<u8>,
    spki_der: Vec<u8>,
    description: String,
}

impl fmt::Debug for KeySigner {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KeySigner")
            .field("key", &self.description)
            .finish_non_exhaustive()
    }
}

// sha256WithRSAEncryption with NULL parameters.
const SHA256_WITH_RSA: &[u8] = &[
    0x30, 0x0d, 0x06, 0x09, 0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x0b, 0x05, 0x00,
];
// ecdsa-with-SHA256 / SHA384 / SHA512, parameters absent (RFC 5758).
const ECDSA_SHA256: &[u8] = &[
    0x30, 0x0a, 0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x04, 0x03, 0x02,
];
const ECDSA_SHA384: &[u8] = &[
    0x30, 0x0a, 0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x04, 0x03, 0x03,
];
const ECDSA_SHA512: &[u8] = &[
    0x30, 0x0a, 0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x04, 0x03, 0x04,
];

/// EC curves a CAPF/issuer key may use, with the signature algorithm each is used with.
/// aws-lc-rs pairs P-384 only with SHA-384 (there is no P-384/SHA-256 signing algorithm), and
/// P-521 with SHA-512.
const EC_ALGORITHMS: [(&EcdsaSigningAlgorithm, &[u8], &str); 3] = [
    (&ECDSA_P256_SHA256_ASN1_SIGNING, ECDSA_SHA256, "ec-p256"),
    (&ECDSA_P384_SHA384_ASN1_SIGNING, ECDSA_SHA384, "ec-p384"),
    (&ECDSA_P521_SHA512_ASN1_SIGNING, ECDSA_SHA512, "ec-p521"),
];

/// Key types [`KeySigner::generate`] can make.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GeneratedKey {
    Rsa2048,
    Rsa3072,
    Rsa4096,
    EcP256,
    EcP384,
}

impl KeySigner {
    /// Generates a fresh key.
    pub fn generate(kind: GeneratedKey) -> Result<KeySigner, KeyError> {
        let rsa = |size| {
            RsaKeyPair::generate(size)
                .map_err(|_| KeyError::Generation)
                .and_then(KeySigner::from_rsa)
        };
        let ec = |alg: &'static EcdsaSigningAlgorithm| {
            EcdsaKeyPair::generate(alg)
                .map_err(|_| KeyError::Generation)
                .and_then(KeySigner::from_ec)
        };
        match kind {
            GeneratedKey::Rsa2048 => rsa(KeySize::Rsa2048),
            GeneratedKey::Rsa3072 => rsa(KeySize::Rsa3072),
            GeneratedKey::Rsa4096 => rsa(KeySize::Rsa4096),
            GeneratedKey::EcP256 => ec(&ECDSA_P256_SHA256_ASN1_SIGNING),
            GeneratedKey::EcP384 => ec(&ECDSA_P384_SHA384_ASN1_SIGNING),
        }
    }

    /// Loads an unencrypted PKCS#8 key (RSA or EC P-256/P-384/P-521).
    pub fn from_pkcs8_der(der: &[u8]) -> Result<KeySigner, KeyError> {
        let rsa_error = match RsaKeyPair::from_pkcs8(der) {
            Ok(kp) => return KeySigner::from_rsa(kp),
            Err(e) => e,
        };
        for (alg, _, _) in EC_ALGORITHMS {
            if let Ok(kp) = EcdsaKeyPair::from_pkcs8(alg, der) {
                return KeySigner::from_ec(kp);
            }
        }
        Err(KeyError::Rejected(rsa_error.description_()))
    }

    /// Loads the first private key of a PEM text: PKCS#8 (`PRIVATE KEY`), PKCS#1
    /// (`RSA PRIVATE KEY`) or SEC1 (`EC PRIVATE KEY`). Other blocks (certificates) are skipped.
    pub fn from_pem(text: &str) -> Result<KeySigner, KeyError> {
        let blocks = pem::parse_many(text).map_err(|_| KeyError::NotFound)?;
        for block in &blocks {
            match block.tag() {
                "PRIVATE KEY" => return KeySigner::from_pkcs8_der(block.contents()),
                "RSA PRIVATE KEY" => {
                    return RsaKeyPair::from_der(block.contents())
                        .map_err(|e| KeyError::Rejected(e.description_()))
                        .and_then(KeySigner::from_rsa);
                }
                "EC PRIVATE KEY" => {
                    for (alg, _, _) in EC_ALGORITHMS {
                        if let Ok(kp) = EcdsaKeyPair::from_private_key_der(alg, block.contents()) {
                            return KeySigner::from_ec(kp);
                        }
                    }
                    return Err(KeyError::Rejected("EC key on an unsupported curve"));
                }
                _ => {}
            }
        }
        Err(KeyError::NotFound)
    }

    fn from_rsa(kp: RsaKeyPair) -> Result<KeySigner, KeyError> {
        let bits = kp.public_modulus_len() * 8;
        if bits < 2048 {
            return Err(KeyError::Rejected("RSA key shorter than 2048 bits"));
        }
        let spki: PublicKeyX509Der<'static> = kp
            .public_key()
            .as_der()
            .map_err(|_| KeyError::Rejected("cannot encode the public key"))?;
        Ok(KeySigner {
            spki_der: spki.as_ref().to_vec(),
            key: KeyKind::Rsa(kp),
            algorithm_der: SHA256_WITH_RSA.to_vec(),
            description: format!("rsa-{bits}"),
        })
    }

    fn from_ec(kp: EcdsaKeyPair) -> Result<KeySigner, KeyError> {
        let (alg_der, description) = EC_ALGORITHMS
            .iter()
            .find(|(alg, _, _)| *alg == kp.algorithm())
            .map(|(_, der, name)| (*der, *name))
            .ok_or(KeyError::Rejected("EC key on an unsupported curve"))?;
        let spki: PublicKeyX509Der<'static> = kp
            .public_key()
            .as_der()
            .map_err(|_| KeyError::Rejected("cannot encode the public key"))?;
        Ok(KeySigner {
            spki_der: spki.as_ref().to_vec(),
            key: KeyKind::Ec(kp),
            algorithm_der: alg_der.to_vec(),
            description: description.to_string(),
        })
    }

    /// The key as unencrypted PKCS#8 DER (for rustls and for writing capf.key).
    pub(crate) fn to_pkcs8_der(&self) -> Result<SecretBytes, KeyError> {
        let doc = match &self.key {
            KeyKind::Rsa(kp) => {
                let der: Pkcs8V1Der<'static> = kp
                    .as_der()
                    .map_err(|_| KeyError::Rejected("cannot encode the private key"))?;
                der.as_ref().to_vec()
            }
            KeyKind::Ec(kp) => kp
                .to_pkcs8v1()
                .map_err(|_| KeyError::Rejected("cannot encode the private key"))?
                .as_ref()
                .to_vec(),
        };
        Ok(SecretBytes::new(doc))
    }

    /// `rsa-2048`, `ec-p256`, ... for logs.
    pub fn description(&self) -> &str {
        &self.description
    }

    /// Whether this is an RSA key.
    pub fn is_rsa(&self) -> bool {
        matches!(self.key, KeyKind::Rsa(_))
    }
}

impl Signer for KeySigner {
    fn algorithm_der(&self) -> &[u8] {
        &self.algorithm_der
    }

    fn sign(&self, message: &[u8]) -> Result<Vec<u8>, SignError> {
        let rng = SystemRandom::new();
        match &self.key {
            KeyKind::Rsa(kp) => {
                let mut sig = vec![0u8; kp.public_modulus_len()];
                kp.sign(&RSA_PKCS1_SHA256, &rng, message, &mut sig)
                    .map_err(|_| SignError::Failed)?;
                Ok(sig)
            }
            KeyKind::Ec(kp) => kp
                .sign(&rng, message)
                .map(|s| s.as_ref().to_vec())
                .map_err(|_| SignError::Failed),
        }
    }

    fn public_key_spki_der(&self) -> &[u8] {
        &self.spki_der
    }
}

/// Wraps a signature in the BIT STRING content a certificate carries (no unused bits).
pub(crate) fn signature_bit_string(signature: &[u8]) -> Vec<u8> {
    let mut content = Vec::with_capacity(signature.len() + 1);
    content.push(0);
    content.extend_from_slice(signature);
    der_io::tlv(der_io::BIT_STRING, &content)
}

#[cfg(test)]
mod tests {
    use super::*;
    use aws_lc_rs::signature::{
        UnparsedPublicKey, ECDSA_P256_SHA256_ASN1, ECDSA_P384_SHA384_ASN1,
        RSA_PKCS1_2048_8192_SHA256,
    };

    /// The raw public key inside an SPKI (the BIT STRING content without the unused-bits byte).
    fn spki_key_bits(spki: &[u8]) -> Vec<u8> {
        let seq = der_io::read_one(spki).unwrap();
        let parts = der_io::read_all(seq.value).unwrap();
        parts[1].value[1..].to_vec()
    }

    #[test]
    fn generated_keys_sign_verifiably() {
        let cases = [
            (GeneratedKey::Rsa2048, SHA256_WITH_RSA, "rsa-2048"),
            (GeneratedKey::EcP256, ECDSA_SHA256, "ec-p256"),
            (GeneratedKey::EcP384, ECDSA_SHA384, "ec-p384"),
        ];
        for (kind, alg, name) in cases {
            let signer = KeySigner::generate(kind).unwrap();
            assert_eq!(signer.algorithm_der(), alg);
            assert_eq!(signer.description(), name);
            let msg = b"to be signed";
            let sig = signer.sign(msg).unwrap();
            let key = spki_key_bits(signer.public_key_spki_der());
            let verify_alg: &dyn aws_lc_rs::signature::VerificationAlgorithm = match kind {
                GeneratedKey::EcP256 => &ECDSA_P256_SHA256_ASN1,
                GeneratedKey::EcP384 => &ECDSA_P384_SHA384_ASN1,
                _ => &RSA_PKCS1_2048_8192_SHA256,
            };
            UnparsedPublicKey::new(verify_alg, &key)
                .verify(msg, &sig)
                .unwrap();
            assert!(UnparsedPublicKey::new(verify_alg, &key)
                .verify(b"other", &sig)
                .is_err());
        }
    }

    #[test]
    fn pkcs8_round_trip_and_pem_forms() {
        let signer = KeySigner::generate(GeneratedKey::EcP256).unwrap();
        let der = signer.to_pkcs8_der().unwrap();
        let again = KeySigner::from_pkcs8_der(der.as_bytes()).unwrap();
        assert_eq!(again.public_key_spki_der(), signer.public_key_spki_der());
        let pem_text = pem::encode(&pem::Pem::new("PRIVATE KEY", der.as_bytes().to_vec()));
        let from_pem = KeySigner::from_pem(&pem_text).unwrap();
        assert_eq!(from_pem.public_key_spki_der(), signer.public_key_spki_der());
        assert!(!format!("{signer:?}").contains(&hex::encode(der.as_bytes())));
        assert!(format!("{der:?}").contains("redacted"));
    }

    #[test]
    fn rejects_non_keys() {
        assert!(matches!(
            KeySigner::from_pkcs8_der(b"not a key"),
            Err(KeyError::Rejected(_))
        ));
        assert_eq!(
            KeySigner::from_pem("no pem here").unwrap_err(),
            KeyError::NotFound
        );
        let cert_only = pem::encode(&pem::Pem::new("CERTIFICATE", vec![0x30, 0x00]));
        assert_eq!(
            KeySigner::from_pem(&cert_only).unwrap_err(),
            KeyError::NotFound
        );
    }
}
