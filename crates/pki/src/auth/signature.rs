//! Public keys and the two kinds of signature this module checks: the CAPF "bare hash"
//! signatures a phone makes over its name and certificate (spec 5.4/5.5), and ordinary X.509
//! certificate signatures on the issuer path.

use const_oid::db::rfc5912::{
    ECDSA_WITH_SHA_256, ECDSA_WITH_SHA_384, ECDSA_WITH_SHA_512, ID_EC_PUBLIC_KEY, RSA_ENCRYPTION,
    SECP_256_R_1, SECP_384_R_1, SECP_521_R_1, SHA_1_WITH_RSA_ENCRYPTION,
    SHA_256_WITH_RSA_ENCRYPTION, SHA_384_WITH_RSA_ENCRYPTION, SHA_512_WITH_RSA_ENCRYPTION,
};
use der::asn1::ObjectIdentifier;
use der::{Tag, Tagged};
use p256::ecdsa::signature::hazmat::PrehashVerifier;
use rsa::pkcs1::DecodeRsaPublicKey;
use rsa::traits::PublicKeyParts;
use rsa::{Pkcs1v15Sign, RsaPublicKey};
use sha1::Sha1;
use sha2::{Sha256, Sha384, Sha512};
use spki::AlgorithmIdentifierOwned;
use x509_cert::spki::SubjectPublicKeyInfoOwned;

/// Smallest RSA modulus accepted anywhere in certificate authentication. Anything shorter is
/// factorable in practice, so a signature by such a key proves nothing.
pub(super) const MIN_RSA_BITS: usize = 1024;
/// Largest RSA modulus accepted; bounds the cost of a verification on attacker-chosen keys.
pub(super) const MAX_RSA_BITS: usize = 4096;

/// Hash functions used by CAPF signatures and by certificate signatures.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum HashAlg {
    Sha1,
    Sha256,
    Sha384,
    Sha512,
}

impl HashAlg {
    /// Hash id of a SHA2_SIGNED_DATA element or SUDI block 3 (spec 3.4/3.6): 3 = SHA-512 is
    /// what phones send; 2 = SHA-256 is accepted as the spec recommends.
    pub(crate) fn from_sha2_id(id: u8) -> Option<HashAlg> {
        match id {
            2 => Some(HashAlg::Sha256),
            3 => Some(HashAlg::Sha512),
            _ => None,
        }
    }

    /// Digest of the concatenation of `parts`; the parts avoid building the message in memory.
    pub(crate) fn digest(self, parts: &[&[u8]]) -> Vec<u8> {
        fn run<D: sha2::Digest>(parts: &[&[u8]]) -> Vec<u8> {
            let mut hasher = D::new();
            for part in parts {
                hasher.update(part);
            }
            hasher.finalize().to_vec()
        }
        match self {
            HashAlg::Sha1 => run::<Sha1>(parts),
            HashAlg::Sha256 => run::<Sha256>(parts),
            HashAlg::Sha384 => run::<Sha384>(parts),
            HashAlg::Sha512 => run::<Sha512>(parts),
        }
    }

    /// DER DigestInfo header that precedes the hash in a PKCS#1 v1.5 certificate signature
    /// (RFC 8017 section 9.2). Written out because the sha1/sha2 crates are built without
    /// their `oid` feature; a unit test re-derives them from the OIDs.
    pub(crate) fn digest_info_prefix(self) -> &'static [u8] {
        match self {
            HashAlg::Sha1 => &[
                0x30, 0x21, 0x30, 0x09, 0x06, 0x05, 0x2b, 0x0e, 0x03, 0x02, 0x1a, 0x05, 0x00, 0x04,
                0x14,
            ],
            HashAlg::Sha256 => &[
                0x30, 0x31, 0x30, 0x0d, 0x06, 0x09, 0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02,
                0x01, 0x05, 0x00, 0x04, 0x20,
            ],
            HashAlg::Sha384 => &[
                0x30, 0x41, 0x30, 0x0d, 0x06, 0x09, 0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02,
                0x02, 0x05, 0x00, 0x04, 0x30,
            ],
            HashAlg::Sha512 => &[
                0x30, 0x51, 0x30, 0x0d, 0x06, 0x09, 0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02,
                0x03, 0x05, 0x00, 0x04, 0x40,
            ],
        }
    }

    pub(crate) fn output_len(self) -> usize {
        match self {
            HashAlg::Sha1 => 20,
            HashAlg::Sha256 => 32,
            HashAlg::Sha384 => 48,
            HashAlg::Sha512 => 64,
        }
    }
}

/// Why a public key cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum KeyError {
    #[error("unsupported public key algorithm {0}")]
    Algorithm(String),
    #[error("unsupported elliptic curve {0}")]
    Curve(String),
    #[error("RSA modulus of {0} bits is outside {MIN_RSA_BITS}..={MAX_RSA_BITS}")]
    RsaSize(usize),
    #[error("malformed public key: {0}")]
    Malformed(String),
}

/// A public key of a kind phones and manufacturer CAs use.
#[derive(Clone, Debug)]
pub(crate) enum PublicKey {
    Rsa(RsaPublicKey),
    P256(p256::ecdsa::VerifyingKey),
    P384(p384::ecdsa::VerifyingKey),
    P521(p521::ecdsa::VerifyingKey),
}

impl PublicKey {
    pub(crate) fn from_spki(spki: &SubjectPublicKeyInfoOwned) -> Result<PublicKey, KeyError> {
        let key_bytes = spki
            .subject_public_key
            .as_bytes()
            .ok_or_else(|| KeyError::Malformed("key bit string has unused bits".into()))?;
        let algorithm = spki.algorithm.oid;
        if algorithm == RSA_ENCRYPTION {
            let key = RsaPublicKey::from_pkcs1_der(key_bytes)
                .map_err(|e| KeyError::Malformed(e.to_string()))?;
            let bits = key.n().bits();
            if !(MIN_RSA_BITS..=MAX_RSA_BITS).contains(&bits) {
                return Err(KeyError::RsaSize(bits));
            }
            Ok(PublicKey::Rsa(key))
        } else if algorithm == ID_EC_PUBLIC_KEY {
            let curve: ObjectIdentifier = spki
                .algorithm
                .parameters
                .as_ref()
                .ok_or_else(|| KeyError::Malformed("EC key without curve parameters".into()))?
                .decode_as()
                .map_err(|_| KeyError::Curve("(not a named curve)".into()))?;
            let malformed = |_| KeyError::Malformed("invalid EC point".into());
            if curve == SECP_256_R_1 {
                p256::ecdsa::VerifyingKey::from_sec1_bytes(key_bytes)
                    .map(PublicKey::P256)
                    .map_err(malformed)
            } else if curve == SECP_384_R_1 {
                p384::ecdsa::VerifyingKey::from_sec1_bytes(key_bytes)
                    .map(PublicKey::P384)
                    .map_err(malformed)
            } else if curve == SECP_521_R_1 {
                p521::ecdsa::VerifyingKey::from_sec1_bytes(key_bytes)
                    .map(PublicKey::P521)
                    .map_err(malformed)
            } else {
                Err(KeyError::Curve(curve.to_string()))
            }
        } else {
            Err(KeyError::Algorithm(algorithm.to_string()))
        }
    }

    pub(crate) fn is_rsa(&self) -> bool {
        matches!(self, PublicKey::Rsa(_))
    }

    /// A CAPF signature over the message made of `parts` (spec 5.4): for RSA a PKCS#1 v1.5
    /// type-1 block around the bare hash (no DigestInfo), padding fully checked and the
    /// signature exactly as long as the modulus; for EC a DER ECDSA signature of the hash.
    pub(crate) fn verify_capf(&self, hash: HashAlg, parts: &[&[u8]], signature: &[u8]) -> bool {
        let digest = hash.digest(parts);
        match self {
            PublicKey::Rsa(key) => key
                .verify(Pkcs1v15Sign::new_unprefixed(), &digest, signature)
                .is_ok(),
            ec => ec.verify_ecdsa_prehash(&digest, signature),
        }
    }

    /// An X.509 signature made with `algorithm` over `signed` (the raw TBS bytes).
    pub(crate) fn verify_x509(
        &self,
        algorithm: &AlgorithmIdentifierOwned,
        signed: &[u8],
        signature: &[u8],
    ) -> bool {
        let Some((hash, is_rsa)) = x509_signature_algorithm(algorithm) else {
            return false;
        };
        let digest = hash.digest(&[signed]);
        match (self, is_rsa) {
            (PublicKey::Rsa(key), true) => {
                let scheme = Pkcs1v15Sign {
                    hash_len: Some(hash.output_len()),
                    prefix: hash.digest_info_prefix().into(),
                };
                key.verify(scheme, &digest, signature).is_ok()
            }
            (PublicKey::Rsa(_), false) | (_, true) => false,
            (ec, false) => ec.verify_ecdsa_prehash(&digest, signature),
        }
    }

    /// ECDSA over an already computed digest. The curve crates left-pad a digest shorter than
    /// the group order (SHA-1 on P-384/P-521) and truncate a longer one, as ECDSA prescribes.
    fn verify_ecdsa_prehash(&self, digest: &[u8], signature: &[u8]) -> bool {
        match self {
            PublicKey::Rsa(_) => false,
            PublicKey::P256(key) => p256::ecdsa::Signature::from_der(signature)
                .is_ok_and(|sig| key.verify_prehash(digest, &sig).is_ok()),
            PublicKey::P384(key) => p384::ecdsa::Signature::from_der(signature)
                .is_ok_and(|sig| key.verify_prehash(digest, &sig).is_ok()),
            PublicKey::P521(key) => p521::ecdsa::Signature::from_der(signature)
                .is_ok_and(|sig| key.verify_prehash(digest, &sig).is_ok()),
        }
    }
}

/// Hash and family (true = RSA PKCS#1 v1.5, false = ECDSA) of a certificate signature
/// algorithm we accept. SHA-1 only for RSA: old manufacturing CAs sign with it.
fn x509_signature_algorithm(algorithm: &AlgorithmIdentifierOwned) -> Option<(HashAlg, bool)> {
    let oid = algorithm.oid;
    let rsa = [
        (SHA_1_WITH_RSA_ENCRYPTION, HashAlg::Sha1),
        (SHA_256_WITH_RSA_ENCRYPTION, HashAlg::Sha256),
        (SHA_384_WITH_RSA_ENCRYPTION, HashAlg::Sha384),
        (SHA_512_WITH_RSA_ENCRYPTION, HashAlg::Sha512),
    ];
    let ecdsa = [
        (ECDSA_WITH_SHA_256, HashAlg::Sha256),
        (ECDSA_WITH_SHA_384, HashAlg::Sha384),
        (ECDSA_WITH_SHA_512, HashAlg::Sha512),
    ];
    if let Some((_, hash)) = rsa.iter().find(|(o, _)| *o == oid) {
        // RFC 4055: parameters are NULL; absent parameters are tolerated as many stacks do.
        let params_ok = algorithm
            .parameters
            .as_ref()
            .is_none_or(|p| p.tag() == Tag::Null && p.value().is_empty());
        return params_ok.then_some((*hash, true));
    }
    if let Some((_, hash)) = ecdsa.iter().find(|(o, _)| *o == oid) {
        // RFC 5758: parameters are absent.
        return algorithm.parameters.is_none().then_some((*hash, false));
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use const_oid::db::rfc5912::{ID_SHA_1, ID_SHA_256, ID_SHA_384, ID_SHA_512};
    use der::asn1::{Null, OctetString};
    use der::{Any, Encode, Sequence};
    use p256::ecdsa::signature::hazmat::PrehashSigner;
    use rsa::RsaPrivateKey;

    #[derive(Sequence)]
    struct DigestInfo {
        algorithm: AlgorithmIdentifierOwned,
        digest: OctetString,
    }

    #[test]
    fn digest_info_prefixes_match_their_der_encoding() {
        for (hash, oid) in [
            (HashAlg::Sha1, ID_SHA_1),
            (HashAlg::Sha256, ID_SHA_256),
            (HashAlg::Sha384, ID_SHA_384),
            (HashAlg::Sha512, ID_SHA_512),
        ] {
            let digest = hash.digest(&[b"abc"]);
            let info = DigestInfo {
                algorithm: AlgorithmIdentifierOwned {
                    oid,
                    parameters: Some(Any::from(Null)),
                },
                digest: OctetString::new(digest.clone()).unwrap(),
            };
            let encoded = info.to_der().unwrap();
            let mut expected = hash.digest_info_prefix().to_vec();
            expected.extend_from_slice(&digest);
            assert_eq!(encoded, expected, "{hash:?}");
            assert_eq!(digest.len(), hash.output_len());
        }
    }

    #[test]
    fn digest_of_parts_equals_digest_of_concatenation() {
        for hash in [
            HashAlg::Sha1,
            HashAlg::Sha256,
            HashAlg::Sha384,
            HashAlg::Sha512,
        ] {
            assert_eq!(
                hash.digest(&[b"SEP0011", b"\0", b"cert"]),
                hash.digest(&[b"SEP0011\0cert"])
            );
        }
    }

    #[test]
    fn sha2_ids() {
        assert_eq!(HashAlg::from_sha2_id(3), Some(HashAlg::Sha512));
        assert_eq!(HashAlg::from_sha2_id(2), Some(HashAlg::Sha256));
        assert_eq!(HashAlg::from_sha2_id(1), None);
        assert_eq!(HashAlg::from_sha2_id(0), None);
        assert_eq!(HashAlg::from_sha2_id(4), None);
    }

    /// A random signing key of `len` scalar bytes; the curve crates here are built without an
    /// RNG of their own. Draws again in the rare case the bytes are not below the order.
    fn random_key<K>(len: usize, from_slice: impl Fn(&[u8]) -> Option<K>) -> K {
        use rand::RngCore;
        for _ in 0..100 {
            let mut bytes = vec![0u8; len];
            rand::thread_rng().fill_bytes(&mut bytes);
            if len == 66 {
                // P-521: the order has 521 bits, so only the low bit of the top byte is free.
                bytes[0] &= 1;
            }
            if let Some(key) = from_slice(&bytes) {
                return key;
            }
        }
        panic!("no valid key generated");
    }

    #[test]
    fn ecdsa_sha1_prehash_on_every_curve() {
        let parts: [&[u8]; 2] = [b"SEP00112233AABB\0", b"certificate bytes"];
        for hash in [HashAlg::Sha1, HashAlg::Sha256, HashAlg::Sha512] {
            let digest = hash.digest(&parts);

            let sk = random_key(32, |b| p256::ecdsa::SigningKey::from_slice(b).ok());
            let sig: p256::ecdsa::Signature = sk.sign_prehash(&digest).unwrap();
            let key = PublicKey::P256(*sk.verifying_key());
            assert!(key.verify_capf(hash, &parts, sig.to_der().as_bytes()));
            assert!(!key.verify_capf(hash, &[b"other"], sig.to_der().as_bytes()));

            let sk = random_key(48, |b| p384::ecdsa::SigningKey::from_slice(b).ok());
            let sig: p384::ecdsa::Signature = sk.sign_prehash(&digest).unwrap();
            let key = PublicKey::P384(*sk.verifying_key());
            assert!(key.verify_capf(hash, &parts, sig.to_der().as_bytes()));
            assert!(!key.verify_capf(hash, &[b"other"], sig.to_der().as_bytes()));

            let sk = random_key(66, |b| p521::ecdsa::SigningKey::from_slice(b).ok());
            let sig: p521::ecdsa::Signature = sk.sign_prehash(&digest).unwrap();
            let key = PublicKey::P521(*sk.verifying_key());
            assert!(key.verify_capf(hash, &parts, sig.to_der().as_bytes()));
            assert!(!key.verify_capf(hash, &[b"other"], sig.to_der().as_bytes()));
        }
    }

    /// ECDSA-with-SHA-1 signatures made by OpenSSL 3.0 (`openssl dgst -sha1 -sign`) over
    /// `SEP00112233AABB\0independent check`: an outside check that a 20-byte digest is
    /// left-padded the standard way on the larger curves, not just consistently with our
    /// own signer.
    #[test]
    fn ecdsa_sha1_matches_openssl_on_p384_and_p521() {
        use der::Decode;
        let message: [&[u8]; 2] = [b"SEP00112233AABB\0", b"independent check"];
        let cases = [
            (
                "3076301006072a8648ce3d020106052b81040022036200042a3baa082a0a432227bc3b3a455d6a86\
                 760b5f4dc735877784e228e7e008b3dab45f0117debdda39e76e283e80c691176baa156e8d6a3702\
                 d2e55a4c4e31b834dba3e19b8c79ad2ac74c33c42460c5608d3159f5741f120447333fc354652e16",
                "3065023065ee1ddc7a0b539e22391009fa6f56dd2a5021192b272d22bb1d9681a7a98f2c69f97dbb\
                 494d45cef6b7497b3d5ff82b023100b7b87ff9c323ddc4381799dd38ae3bcc4cb7e793ed5e900dd1\
                 728c9329b9a44472f63a9d25718ad0f894a32d7b04b5f6",
            ),
            (
                "30819b301006072a8648ce3d020106052b81040023038186000401060a246467ff8ddc517f996fa4\
                 4d16fef69e63d0e7ab7a8b59c917c9ced5f3bac1685a462f0b5de45acbd1246775107f7b94e6ccd2\
                 676c9b38e54b1ddb00d1de1801853fc3cef6b34f5c471caecc5e3f33d0ee80a9d0c5d1126141038e\
                 bcb207b0e474b3dfe9bdcfb3208dc13bcb0de79f84e2b6003c29cfecbfe6c09280101049bd85",
                "30818702420095321f093773b65b6eae99c0bb04a43a78f3b8eb46f5e83ae2c788f9d88595618b8c\
                 0e199c4cac11148aafbc68d1b77f28a273688a34ba12820c97fad841697c4d024143d6ec0338f9bc\
                 c174b94f8590294d342eefb5d1f7bbf3c9088ed47066a63831a50211eee2bd6b1945e7a7c4a79a04\
                 6aba68896112348dfb5f73968a735df61f29",
            ),
        ];
        for (spki_hex, sig_hex) in cases {
            let spki =
                SubjectPublicKeyInfoOwned::from_der(&hex::decode(spki_hex).unwrap()).unwrap();
            let key = PublicKey::from_spki(&spki).unwrap();
            assert!(matches!(key, PublicKey::P384(_) | PublicKey::P521(_)));
            let sig = hex::decode(sig_hex).unwrap();
            assert!(key.verify_capf(HashAlg::Sha1, &message, &sig));
            assert!(!key.verify_capf(HashAlg::Sha256, &message, &sig));
            assert!(!key.verify_capf(
                HashAlg::Sha1,
                &[b"SEP00112233AABC\0independent check"],
                &sig
            ));
        }
    }

    #[test]
    fn rsa_bare_hash_requires_exact_length_and_padding() {
        let sk = RsaPrivateKey::new(&mut rand::thread_rng(), 1024).unwrap();
        let key = PublicKey::Rsa(sk.to_public_key());
        let parts: [&[u8]; 1] = [b"message"];
        let digest = HashAlg::Sha1.digest(&parts);
        let sig = sk.sign(Pkcs1v15Sign::new_unprefixed(), &digest).unwrap();
        assert!(key.verify_capf(HashAlg::Sha1, &parts, &sig));
        // A DigestInfo-prefixed signature is not a CAPF signature.
        let prefixed = sk
            .sign(
                Pkcs1v15Sign {
                    hash_len: Some(20),
                    prefix: HashAlg::Sha1.digest_info_prefix().into(),
                },
                &digest,
            )
            .unwrap();
        assert!(!key.verify_capf(HashAlg::Sha1, &parts, &prefixed));
        // One byte short (leading zero dropped or not) never verifies.
        assert!(!key.verify_capf(HashAlg::Sha1, &parts, &sig[1..]));
        let mut long = vec![0u8];
        long.extend_from_slice(&sig);
        assert!(!key.verify_capf(HashAlg::Sha1, &parts, &long));
        assert!(!key.verify_capf(HashAlg::Sha1, &parts, &[]));
    }
}
