//! Certificate authentication against the captured vectors 04 (RSA MIC + SUDI) and 05 (EC
//! LSC + SUDI), their tampered variants, and certificate hierarchies generated here. The
//! shared readers and signers are here; `captured`, `generated` and `service_path` hold the
//! tests.

use std::path::Path;

use capf_pki::auth::{
    verify_certificate_auth, AuthError, AuthPolicy, CertAuthRequest, CertKind, ChainError,
    Precedence, SudiBlock, TrustAnchors, WhichSignature,
};
use chrono::{DateTime, Duration, Utc};
use p256::ecdsa::signature::hazmat::PrehashSigner;
use p256::pkcs8::DecodePrivateKey as _;
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};
use rsa::pkcs8::DecodePrivateKey as _;
use rsa::traits::{PrivateKeyParts, PublicKeyParts};
use rsa::{BigUint, Pkcs1v15Sign, RsaPrivateKey};
use sha1::Sha1;
use sha2::{Digest, Sha256, Sha512};

const VECTORS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/vectors");

// ---------------------------------------------------------------------------------------
// Reading the vectors

fn read(rel: &str) -> String {
    std::fs::read_to_string(Path::new(VECTORS).join(rel)).unwrap()
}

/// The DER of the first certificate in a PEM file.
fn cert_der(rel: &str) -> Vec<u8> {
    pem_block(rel, "CERTIFICATE")
}

fn pem_block(rel: &str, tag: &str) -> Vec<u8> {
    pem::parse_many(read(rel))
        .unwrap()
        .into_iter()
        .find(|b| b.tag() == tag)
        .unwrap_or_else(|| panic!("{rel} has no {tag}"))
        .into_contents()
}

/// The certificate-authentication content of an AUTH_RESPONSE, owned so tests can tamper
/// with any part of it.
#[derive(Clone, Debug)]
struct Auth {
    device: String,
    session: u32,
    cert: Vec<u8>,
    extra: Vec<Vec<u8>>,
    sha1_sig: Vec<u8>,
    sha2_id: u8,
    sha2_sig: Vec<u8>,
    sudi: Option<Sudi>,
}

#[derive(Clone, Debug)]
struct Sudi {
    cert: Vec<u8>,
    sha1_sig: Vec<u8>,
    sha2_id: u8,
    sha2_sig: Vec<u8>,
}

impl Auth {
    fn request(&self) -> CertAuthRequest<'_> {
        CertAuthRequest {
            device_name: &self.device,
            certificate: &self.cert,
            extra_chain: &self.extra,
            signed_data: &self.sha1_sig,
            sha2_hash_id: self.sha2_id,
            sha2_signature: &self.sha2_sig,
            sudi: self.sudi.as_ref().map(|s| SudiBlock {
                certificate: &s.cert,
                sha1_signature: &s.sha1_sig,
                sha2_hash_id: s.sha2_id,
                sha2_signature: &s.sha2_sig,
            }),
            session_id: self.session,
        }
    }

    fn sudi_mut(&mut self) -> &mut Sudi {
        self.sudi.as_mut().unwrap()
    }
}

/// Reads `len16` at `at` and returns (value, rest-start).
fn take(bytes: &[u8], at: usize) -> (&[u8], usize) {
    let len = usize::from(u16::from_be_bytes([bytes[at], bytes[at + 1]]));
    let start = at + 2;
    (&bytes[start..start + len], start + len)
}

/// Parses the AUTH_RESPONSE frame of a vector with a minimal TLV walk.
fn vector_auth(file: &str) -> Auth {
    let text = read(file);
    let meta = |key: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(&format!("@{key} ")))
            .unwrap()
            .trim()
            .to_string()
    };
    let session = u32::from_str_radix(&meta("session"), 16).unwrap();
    let frame = text
        .lines()
        .filter_map(|l| l.strip_prefix("C>S "))
        .map(|h| hex::decode(h.trim()).unwrap())
        .find(|f| f[1] == 0x02)
        .unwrap();
    assert_eq!(frame[0], 0x55);
    assert_eq!(u32::from_be_bytes(frame[2..6].try_into().unwrap()), session);
    let (body, end) = take(&frame, 6);
    assert_eq!(end, frame.len());

    let mut auth = Auth {
        device: String::new(),
        session,
        cert: Vec::new(),
        extra: Vec::new(),
        sha1_sig: Vec::new(),
        sha2_id: 0,
        sha2_sig: Vec::new(),
        sudi: None,
    };
    let mut at = 0;
    while at < body.len() {
        let tag = body[at];
        let (value, next) = take(body, at + 1);
        match tag {
            4 => {
                // Entry: 01 len16 00 type DER, with len16 = DER length + 2.
                assert_eq!(value[0], 0x01);
                let (entry, entry_end) = take(value, 1);
                assert_eq!(entry_end, value.len());
                auth.cert = entry[2..].to_vec();
            }
            6 => auth.sha1_sig = value.to_vec(),
            13 => {
                let (name, nul) = value.split_at(value.len() - 1);
                assert_eq!(nul, [0]);
                auth.device = String::from_utf8(name.to_vec()).unwrap();
            }
            20 => {
                auth.sha2_id = value[0];
                let (sig, sig_end) = take(value, 1);
                assert_eq!(sig_end, value.len());
                auth.sha2_sig = sig.to_vec();
            }
            16 => {
                assert_eq!(value[0], 0);
                let (cert, b2) = take(value, 1);
                assert_eq!(value[b2], 1);
                let (sha1_sig, b3) = take(value, b2 + 1);
                let sha2_id = value[b3];
                let (sha2_sig, b_end) = take(value, b3 + 1);
                assert_eq!(b_end, value.len());
                auth.sudi = Some(Sudi {
                    cert: cert.to_vec(),
                    sha1_sig: sha1_sig.to_vec(),
                    sha2_id,
                    sha2_sig: sha2_sig.to_vec(),
                });
            }
            _ => {}
        }
        at = next;
    }
    assert_eq!(auth.device, meta("device"));
    auth
}

fn vector_anchors() -> TrustAnchors {
    TrustAnchors::new(
        vec![cert_der("certs/capf-cert.pem")],
        vec![cert_der("certs/mic-root.pem")],
    )
    .unwrap()
}

/// Inside every vector certificate's validity (LSCs: 2026-11-21 + 365 days; CAPF, MIC root,
/// MIC and SUDI: 2026-01-01 to 2035 or later).
fn now() -> DateTime<Utc> {
    "2027-01-01T00:00:00Z".parse().unwrap()
}

fn policy() -> AuthPolicy {
    AuthPolicy {
        precedence: Precedence::Lsc,
        require_sudi: false,
        mic_expiry_allowance: Duration::zero(),
        device_has_lsc: false,
    }
}

fn verify(auth: &Auth, anchors: &TrustAnchors, policy: &AuthPolicy) -> Result<CertKind, AuthError> {
    verify_certificate_auth(&auth.request(), anchors, policy, now()).map(|v| v.kind)
}

fn flip_last(bytes: &mut [u8]) {
    let last = bytes.len() - 1;
    bytes[last] ^= 0x01;
}

// ---------------------------------------------------------------------------------------
// Signing helpers (to rebuild valid signatures after a deliberate change)

enum Signer {
    Rsa(Box<RsaPrivateKey>),
    P256(p256::ecdsa::SigningKey),
}

impl Signer {
    fn from_pkcs8_file(rel: &str) -> Signer {
        let der = pem_block(rel, "PRIVATE KEY");
        Signer::from_pkcs8(&der)
    }

    fn from_pkcs8(der: &[u8]) -> Signer {
        if let Ok(key) = RsaPrivateKey::from_pkcs8_der(der) {
            return Signer::Rsa(Box::new(key));
        }
        Signer::P256(p256::ecdsa::SigningKey::from_pkcs8_der(der).unwrap())
    }

    /// The CAPF signature of `digest`: bare-hash PKCS#1 v1.5 type 1 for RSA, DER ECDSA for EC.
    fn sign(&self, digest: &[u8]) -> Vec<u8> {
        match self {
            Signer::Rsa(key) => key.sign(Pkcs1v15Sign::new_unprefixed(), digest).unwrap(),
            Signer::P256(key) => {
                let sig: p256::ecdsa::Signature = key.sign_prehash(digest).unwrap();
                sig.to_der().as_bytes().to_vec()
            }
        }
    }

    fn rsa(&self) -> &RsaPrivateKey {
        match self {
            Signer::Rsa(key) => key,
            Signer::P256(_) => panic!("not an RSA key"),
        }
    }
}

fn device_message(name: &str, cert: &[u8]) -> Vec<u8> {
    let mut m = name.as_bytes().to_vec();
    m.push(0);
    m.extend_from_slice(cert);
    m
}

/// Re-signs SIGNED_DATA and SHA2_SIGNED_DATA (SHA-512) for the current name and certificate.
fn resign_device(auth: &mut Auth, signer: &Signer) {
    let m = device_message(&auth.device, &auth.cert);
    auth.sha1_sig = signer.sign(&Sha1::digest(&m));
    auth.sha2_id = 3;
    auth.sha2_sig = signer.sign(&Sha512::digest(&m));
}

fn sudi_message(session: u32, cert: &[u8]) -> Vec<u8> {
    let mut m = session.to_le_bytes().to_vec();
    m.extend_from_slice(cert);
    m
}

fn resign_sudi(auth: &mut Auth, signer: &Signer) {
    let m = sudi_message(auth.session, &auth.sudi_mut().cert);
    let sudi = auth.sudi_mut();
    sudi.sha1_sig = signer.sign(&Sha1::digest(&m));
    sudi.sha2_id = 3;
    sudi.sha2_sig = signer.sign(&Sha512::digest(&m));
}

/// Raw RSA private-key operation on a block we build ourselves, so padding can be broken
/// while the hash stays right.
fn raw_rsa_sign(key: &RsaPrivateKey, em: &[u8]) -> Vec<u8> {
    let k = key.size();
    assert_eq!(em.len(), k);
    let s = BigUint::from_bytes_be(em).modpow(key.d(), key.n());
    let bytes = s.to_bytes_be();
    let mut out = vec![0u8; k - bytes.len()];
    out.extend_from_slice(&bytes);
    out
}

/// EM = 00 01 FF..FF 00 H, the block a genuine phone signature encodes.
fn type1_block(k: usize, hash: &[u8]) -> Vec<u8> {
    let mut em = vec![0x00, 0x01];
    em.resize(k - hash.len() - 1, 0xff);
    em.push(0x00);
    em.extend_from_slice(hash);
    em
}

// The tests, by what they start from.
mod captured;
mod generated;
mod service_path;
