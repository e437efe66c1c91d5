//! Certificate authentication against the captured vectors 04 (RSA MIC + SUDI) and 05 (EC
//! LSC + SUDI), their tampered variants, and certificate hierarchies generated here.

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

// ---------------------------------------------------------------------------------------
// The vectors as captured

#[test]
fn vector_04_rsa_mic_with_sudi_authenticates() {
    let auth = vector_auth("04-install-mic-auth-rsa3072.txt");
    assert_eq!(auth.session, 0x1a2b3c44);
    assert_eq!(auth.cert, cert_der("certs/mic.pem"));
    assert_eq!(auth.sudi.as_ref().unwrap().cert, cert_der("certs/sudi.pem"));

    let v = verify_certificate_auth(&auth.request(), &vector_anchors(), &policy(), now()).unwrap();
    assert_eq!(v.kind, CertKind::Mic);
    assert!(v.sudi_verified);
    assert_eq!(
        v.fingerprint_sha256,
        hex::encode(Sha256::digest(&auth.cert))
    );
    // `openssl x509 -serial` on certs/mic.pem prints 0A110002.
    assert_eq!(v.serial_hex, "0a110002");
    assert!(
        v.subject.contains("CN=CP-8845-SEP001122334455"),
        "{}",
        v.subject
    );
}

#[test]
fn vector_05_ec_lsc_with_sudi_authenticates() {
    let auth = vector_auth("05-install-lsc-auth-ec-secp384r1.txt");
    assert_eq!(auth.session, 0x1a2b3c45);
    assert_eq!(auth.cert, cert_der("device/02-SEP00112233AABB-p256.pem"));

    let v = verify_certificate_auth(&auth.request(), &vector_anchors(), &policy(), now()).unwrap();
    assert_eq!(v.kind, CertKind::Lsc);
    assert!(v.sudi_verified);
    assert_eq!(
        v.fingerprint_sha256,
        hex::encode(Sha256::digest(&auth.cert))
    );
    // The 17-byte DER INTEGER 00 94 17 ... loses its sign byte.
    assert_eq!(v.serial_hex, "94176d644f5d3d9e7cec0cab07b1518e");
    assert!(v.subject.contains("CN=SEP00112233AABB"), "{}", v.subject);
}

#[test]
fn vectors_without_sudi_authenticate_unless_sudi_required() {
    for file in [
        "04-install-mic-auth-rsa3072.txt",
        "05-install-lsc-auth-ec-secp384r1.txt",
    ] {
        let mut auth = vector_auth(file);
        auth.sudi = None;
        let v =
            verify_certificate_auth(&auth.request(), &vector_anchors(), &policy(), now()).unwrap();
        assert!(!v.sudi_verified);

        let strict = AuthPolicy {
            require_sudi: true,
            ..policy()
        };
        let err = verify(&auth, &vector_anchors(), &strict).unwrap_err();
        assert_eq!(err, AuthError::SudiRequired);
        assert_eq!(err.cert_kind(), None);
        // With the SUDI back, the strict policy is satisfied.
        let auth = vector_auth(file);
        verify(&auth, &vector_anchors(), &strict).unwrap();
    }
}

#[test]
fn vector_lsc_is_refused_outside_its_validity() {
    let auth = vector_auth("05-install-lsc-auth-ec-secp384r1.txt");
    let anchors = vector_anchors();
    let late: DateTime<Utc> = "2027-11-22T00:00:00Z".parse().unwrap();
    let err = verify_certificate_auth(&auth.request(), &anchors, &policy(), late).unwrap_err();
    assert!(
        matches!(
            err,
            AuthError::Expired {
                kind: CertKind::Lsc,
                ..
            }
        ),
        "{err}"
    );
    assert!(err.is_lsc_problem());
    let early: DateTime<Utc> = "2026-11-21T00:00:00Z".parse().unwrap();
    let err = verify_certificate_auth(&auth.request(), &anchors, &policy(), early).unwrap_err();
    assert!(
        matches!(
            err,
            AuthError::NotYetValid {
                kind: CertKind::Lsc,
                ..
            }
        ),
        "{err}"
    );
}

// ---------------------------------------------------------------------------------------
// One changed byte at a time

#[test]
fn tampered_vectors_are_refused_with_the_right_error() {
    let anchors = vector_anchors();
    for (file, kind) in [
        ("04-install-mic-auth-rsa3072.txt", CertKind::Mic),
        ("05-install-lsc-auth-ec-secp384r1.txt", CertKind::Lsc),
    ] {
        let original = vector_auth(file);
        let check = |auth: &Auth, expected: AuthError| {
            let err = verify(auth, &anchors, &policy()).unwrap_err();
            assert_eq!(err, expected, "{file}");
        };

        let mut a = original.clone();
        let mid = a.sha1_sig.len() / 2;
        a.sha1_sig[mid] ^= 0x40;
        check(
            &a,
            AuthError::BadSignature {
                kind,
                which: WhichSignature::Sha1,
            },
        );

        let mut a = original.clone();
        let mid = a.sha2_sig.len() / 2;
        a.sha2_sig[mid] ^= 0x40;
        check(
            &a,
            AuthError::BadSignature {
                kind,
                which: WhichSignature::Sha2,
            },
        );

        // The certificate's own signature no longer verifies, so it reaches no anchor.
        let mut a = original.clone();
        flip_last(&mut a.cert);
        check(
            &a,
            AuthError::Untrusted {
                presumed: Some(kind),
            },
        );

        // A byte of the subject CN: still parses, still claims the same issuer.
        let mut a = original.clone();
        let pos = a
            .cert
            .windows(a.device.len())
            .position(|w| w == a.device.as_bytes())
            .unwrap();
        a.cert[pos + 3] ^= 0x01;
        check(
            &a,
            AuthError::Untrusted {
                presumed: Some(kind),
            },
        );

        // Cutting the certificate short breaks its DER.
        let mut a = original.clone();
        a.cert.truncate(a.cert.len() / 2);
        assert!(matches!(
            verify(&a, &anchors, &policy()),
            Err(AuthError::MalformedCertificate { .. })
        ));

        // Another session: the SUDI signatures were bound to the original one, and the
        // big-endian reading of the same id is not what phones sign.
        for session in [original.session + 1, original.session.swap_bytes()] {
            let mut a = original.clone();
            a.session = session;
            check(
                &a,
                AuthError::SudiBadSignature {
                    which: WhichSignature::Sha1,
                },
            );
        }

        let mut a = original.clone();
        a.sudi_mut().sha1_sig[10] ^= 0x01;
        check(
            &a,
            AuthError::SudiBadSignature {
                which: WhichSignature::Sha1,
            },
        );

        let mut a = original.clone();
        a.sudi_mut().sha2_sig[10] ^= 0x01;
        check(
            &a,
            AuthError::SudiBadSignature {
                which: WhichSignature::Sha2,
            },
        );

        // The SUDI certificate's signature byte: it no longer chains to the manufacturer.
        let mut a = original.clone();
        flip_last(&mut a.sudi_mut().cert);
        check(
            &a,
            AuthError::SudiUntrusted {
                problem: ChainError::NoPath,
            },
        );

        // Hash ids: 2 (SHA-256) is understood but the signature is over SHA-512; others are
        // refused outright.
        let mut a = original.clone();
        a.sha2_id = 2;
        check(
            &a,
            AuthError::BadSignature {
                kind,
                which: WhichSignature::Sha2,
            },
        );
        for id in [0, 1, 4, 255] {
            let mut a = original.clone();
            a.sha2_id = id;
            check(&a, AuthError::UnsupportedHash { hash_id: id });
            let mut a = original.clone();
            a.sudi_mut().sha2_id = id;
            check(&a, AuthError::UnsupportedHash { hash_id: id });
        }

        let mut a = original.clone();
        a.sha1_sig.clear();
        check(
            &a,
            AuthError::MissingElement {
                element: "SIGNED_DATA",
            },
        );
        let mut a = original.clone();
        a.cert.clear();
        check(
            &a,
            AuthError::MissingElement {
                element: "CERTIFICATE",
            },
        );
    }
}

#[test]
fn sha256_variant_of_sha2_signature_is_accepted() {
    let mut auth = vector_auth("04-install-mic-auth-rsa3072.txt");
    let signer = Signer::from_pkcs8_file("certs/mic.pem");
    let m = device_message(&auth.device, &auth.cert);
    auth.sha2_id = 2;
    auth.sha2_sig = signer.sign(&Sha256::digest(&m));
    assert_eq!(
        verify(&auth, &vector_anchors(), &policy()),
        Ok(CertKind::Mic)
    );
}

// ---------------------------------------------------------------------------------------
// Binding and precedence

#[test]
fn certificate_of_another_device_is_refused() {
    let anchors = vector_anchors();

    // The vector-05 LSC, validly signed, but claiming a different device.
    let mut lsc = vector_auth("05-install-lsc-auth-ec-secp384r1.txt");
    let signer = Signer::from_pkcs8_file("device/02-SEP00112233AABB-p256.pem");
    resign_device(&mut lsc, &signer);
    // Control: re-signing for the right name is accepted, so the helper signs correctly.
    assert_eq!(verify(&lsc, &anchors, &policy()), Ok(CertKind::Lsc));
    lsc.device = "SEP00112233AABC".into();
    resign_device(&mut lsc, &signer);
    assert_eq!(
        verify(&lsc, &anchors, &policy()),
        Err(AuthError::WrongDevice {
            kind: CertKind::Lsc
        })
    );

    // Same for the vector-04 MIC (CN CP-8845-SEP001122334455).
    let mut mic = vector_auth("04-install-mic-auth-rsa3072.txt");
    let signer = Signer::from_pkcs8_file("certs/mic.pem");
    for other in ["SEP001122334466", "SEP00112233445", "CP-8845"] {
        mic.device = other.into();
        resign_device(&mut mic, &signer);
        assert_eq!(
            verify(&mic, &anchors, &policy()),
            Err(AuthError::WrongDevice {
                kind: CertKind::Mic
            }),
            "{other}"
        );
    }
}

#[test]
fn precedence_policy() {
    let anchors = vector_anchors();
    let lsc = vector_auth("05-install-lsc-auth-ec-secp384r1.txt");
    let mic = vector_auth("04-install-mic-auth-rsa3072.txt");
    let mic_only = AuthPolicy {
        precedence: Precedence::Mic,
        ..policy()
    };
    let err = verify(&lsc, &anchors, &mic_only).unwrap_err();
    assert!(
        matches!(
            err,
            AuthError::PolicyRefused {
                kind: CertKind::Lsc,
                ..
            }
        ),
        "{err}"
    );
    assert!(err.is_lsc_problem());
    assert_eq!(verify(&mic, &anchors, &mic_only), Ok(CertKind::Mic));

    let has_lsc = AuthPolicy {
        device_has_lsc: true,
        ..policy()
    };
    let err = verify(&mic, &anchors, &has_lsc).unwrap_err();
    assert!(
        matches!(
            err,
            AuthError::PolicyRefused {
                kind: CertKind::Mic,
                ..
            }
        ),
        "{err}"
    );
    assert!(err.is_mic_problem());
    assert_eq!(verify(&lsc, &anchors, &has_lsc), Ok(CertKind::Lsc));
    assert_eq!(verify(&mic, &anchors, &policy()), Ok(CertKind::Mic));
}

// ---------------------------------------------------------------------------------------
// RSA padding

#[test]
fn rsa_signature_with_broken_padding_is_refused() {
    let anchors = vector_anchors();
    let original = vector_auth("04-install-mic-auth-rsa3072.txt");
    let signer = Signer::from_pkcs8_file("certs/mic.pem");
    let key = signer.rsa();
    let k = key.size();
    let hash = Sha1::digest(device_message(&original.device, &original.cert)).to_vec();

    // Control: our raw signing of a correct block gives the phone's own signature.
    let good = type1_block(k, &hash);
    assert_eq!(raw_rsa_sign(key, &good), original.sha1_sig);

    let mut broken_ff = good.clone();
    broken_ff[5] = 0xfe;
    let mut block_type_2 = good.clone();
    block_type_2[1] = 0x02;
    let mut no_separator = good.clone();
    no_separator[k - hash.len() - 1] = 0xff;
    let mut short_padding = vec![0x00, 0x01, 0xff, 0x00];
    short_padding.resize(k - hash.len(), 0x00);
    short_padding.extend_from_slice(&hash);
    for (what, em) in [
        ("0xfe in the padding", broken_ff),
        ("block type 2", block_type_2),
        ("no zero separator", no_separator),
        ("padding replaced by zeros", short_padding),
    ] {
        let mut a = original.clone();
        a.sha1_sig = raw_rsa_sign(key, &em);
        assert_eq!(
            verify(&a, &anchors, &policy()),
            Err(AuthError::BadSignature {
                kind: CertKind::Mic,
                which: WhichSignature::Sha1
            }),
            "{what}"
        );
    }

    // The same for the SUDI's SHA-512 signature.
    let sudi_signer = Signer::from_pkcs8_file("certs/sudi.pem");
    let sudi_key = sudi_signer.rsa();
    let sudi = original.sudi.as_ref().unwrap();
    let hash = Sha512::digest(sudi_message(original.session, &sudi.cert)).to_vec();
    let good = type1_block(sudi_key.size(), &hash);
    assert_eq!(raw_rsa_sign(sudi_key, &good), sudi.sha2_sig);
    let mut broken = good;
    broken[9] = 0x7f;
    let mut a = original.clone();
    a.sudi_mut().sha2_sig = raw_rsa_sign(sudi_key, &broken);
    assert_eq!(
        verify(&a, &anchors, &policy()),
        Err(AuthError::SudiBadSignature {
            which: WhichSignature::Sha2
        })
    );
}

// ---------------------------------------------------------------------------------------
// Generated hierarchies

/// A certificate made here, with its key.
struct Made {
    params: CertificateParams,
    key: KeyPair,
    der: Vec<u8>,
}

fn params(cn: &str, is_ca: IsCa, from: (i32, u8, u8), to: (i32, u8, u8)) -> CertificateParams {
    let mut p = CertificateParams::new(Vec::<String>::new()).unwrap();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::OrganizationName, "Generated Manufacturer");
    dn.push(DnType::CommonName, cn);
    p.distinguished_name = dn;
    if matches!(is_ca, IsCa::Ca(_)) {
        p.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
    } else {
        p.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    }
    p.is_ca = is_ca;
    p.not_before = rcgen::date_time_ymd(from.0, from.1, from.2);
    p.not_after = rcgen::date_time_ymd(to.0, to.1, to.2);
    p
}

const CURRENT: ((i32, u8, u8), (i32, u8, u8)) = ((2025, 1, 1), (2040, 1, 1));

fn ca() -> IsCa {
    IsCa::Ca(BasicConstraints::Unconstrained)
}

fn root(cn: &str) -> Made {
    root_with(params(cn, ca(), CURRENT.0, CURRENT.1))
}

fn root_with(params: CertificateParams) -> Made {
    let key = KeyPair::generate().unwrap();
    let der = params.self_signed(&key).unwrap().der().to_vec();
    Made { params, key, der }
}

fn issue(params: CertificateParams, issuer: &Made) -> Made {
    let key = KeyPair::generate().unwrap();
    let issuer_ref = Issuer::from_params(&issuer.params, &issuer.key);
    let der = params.signed_by(&key, &issuer_ref).unwrap().der().to_vec();
    Made { params, key, der }
}

fn mic_params(device: &str) -> CertificateParams {
    params(
        &format!("CP-8845-{device}"),
        IsCa::ExplicitNoCa,
        CURRENT.0,
        CURRENT.1,
    )
}

/// A full, correctly signed request for `leaf` (an EC P-256 certificate made here).
fn auth_for(device: &str, leaf: &Made) -> Auth {
    let mut auth = Auth {
        device: device.into(),
        session: 0x0102_0304,
        cert: leaf.der.clone(),
        extra: Vec::new(),
        sha1_sig: Vec::new(),
        sha2_id: 3,
        sha2_sig: Vec::new(),
        sudi: None,
    };
    resign_device(&mut auth, &Signer::from_pkcs8(&leaf.key.serialize_der()));
    auth
}

fn manufacturer_anchors(certs: &[&Made]) -> TrustAnchors {
    TrustAnchors::new(
        vec![cert_der("certs/capf-cert.pem")],
        certs.iter().map(|m| m.der.clone()).collect(),
    )
    .unwrap()
}

const DEVICE: &str = "SEP0011223344CC";

#[test]
fn generated_mic_directly_under_root_is_accepted() {
    let root = root("Generated Root");
    let mic = issue(mic_params(DEVICE), &root);
    let auth = auth_for(DEVICE, &mic);
    assert_eq!(
        verify(&auth, &manufacturer_anchors(&[&root]), &policy()),
        Ok(CertKind::Mic)
    );
}

#[test]
fn mic_from_unknown_ca_is_untrusted() {
    let trusted = root("Generated Root");
    let foreign = root("Other Root");
    let mic = issue(mic_params(DEVICE), &foreign);
    let auth = auth_for(DEVICE, &mic);
    assert_eq!(
        verify(&auth, &manufacturer_anchors(&[&trusted]), &policy()),
        Err(AuthError::Untrusted { presumed: None })
    );

    // An impostor CA with the trusted root's exact name but its own key.
    let impostor = root("Generated Root");
    assert_eq!(
        trusted.params.distinguished_name,
        impostor.params.distinguished_name
    );
    let mic = issue(mic_params(DEVICE), &impostor);
    let auth = auth_for(DEVICE, &mic);
    let err = verify(&auth, &manufacturer_anchors(&[&trusted]), &policy()).unwrap_err();
    assert_eq!(
        err,
        AuthError::Untrusted {
            presumed: Some(CertKind::Mic)
        }
    );
    assert!(err.is_mic_problem());
    // Sending the impostor along does not help: it is not an anchor.
    let mut auth = auth;
    auth.extra = vec![impostor.der.clone()];
    assert!(matches!(
        verify(&auth, &manufacturer_anchors(&[&trusted]), &policy()),
        Err(AuthError::Untrusted { .. })
    ));
}

#[test]
fn intermediate_ca_between_root_and_mic_is_accepted() {
    let root = root("Generated Root");
    let inter = issue(
        params("Generated Intermediate", ca(), CURRENT.0, CURRENT.1),
        &root,
    );
    let mic = issue(mic_params(DEVICE), &inter);
    let mut auth = auth_for(DEVICE, &mic);

    // Configured intermediate.
    let anchors = manufacturer_anchors(&[&root, &inter]);
    assert_eq!(verify(&auth, &anchors, &policy()), Ok(CertKind::Mic));
    // Intermediate sent by the phone.
    let root_only = manufacturer_anchors(&[&root]);
    assert!(matches!(
        verify(&auth, &root_only, &policy()),
        Err(AuthError::Untrusted { presumed: None })
    ));
    auth.extra = vec![inter.der.clone()];
    assert_eq!(verify(&auth, &root_only, &policy()), Ok(CertKind::Mic));
    // An intermediate alone is not a trust anchor.
    auth.extra.clear();
    assert!(matches!(
        verify(&auth, &manufacturer_anchors(&[&inter]), &policy()),
        Err(AuthError::Untrusted {
            presumed: Some(CertKind::Mic)
        })
    ));
}

#[test]
fn issuer_without_ca_true_is_refused() {
    let root = root("Generated Root");
    let not_ca = issue(
        params("Not A CA", IsCa::ExplicitNoCa, CURRENT.0, CURRENT.1),
        &root,
    );
    let mic = issue(mic_params(DEVICE), &not_ca);
    let mut auth = auth_for(DEVICE, &mic);
    let err = verify(&auth, &manufacturer_anchors(&[&root, &not_ca]), &policy()).unwrap_err();
    assert!(
        matches!(err, AuthError::NotACa { kind: CertKind::Mic, ref subject } if subject.contains("Not A CA")),
        "{err}"
    );
    auth.extra = vec![not_ca.der.clone()];
    let err = verify(&auth, &manufacturer_anchors(&[&root]), &policy()).unwrap_err();
    assert!(matches!(err, AuthError::NotACa { .. }), "{err}");

    // No basic constraints at all is not a CA either, even as a self-signed anchor.
    let bare_root = root_with(params("Bare Root", IsCa::NoCa, CURRENT.0, CURRENT.1));
    let mic = issue(mic_params(DEVICE), &bare_root);
    let auth = auth_for(DEVICE, &mic);
    let err = verify(&auth, &manufacturer_anchors(&[&bare_root]), &policy()).unwrap_err();
    assert!(matches!(err, AuthError::NotACa { .. }), "{err}");
}

#[test]
fn issuer_key_usage_and_path_length_are_enforced() {
    let root = root("Generated Root");
    let mut no_cert_sign = params("No Cert Sign", ca(), CURRENT.0, CURRENT.1);
    no_cert_sign.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    let inter = issue(no_cert_sign, &root);
    let mic = issue(mic_params(DEVICE), &inter);
    let auth = auth_for(DEVICE, &mic);
    let err = verify(&auth, &manufacturer_anchors(&[&root, &inter]), &policy()).unwrap_err();
    assert!(
        matches!(
            err,
            AuthError::BadKeyUsage {
                kind: CertKind::Mic,
                ..
            }
        ),
        "{err}"
    );

    let strict_root = root_with(params(
        "Pathlen Zero Root",
        IsCa::Ca(BasicConstraints::Constrained(0)),
        CURRENT.0,
        CURRENT.1,
    ));
    let inter = issue(
        params("Under Pathlen Zero", ca(), CURRENT.0, CURRENT.1),
        &strict_root,
    );
    let mic = issue(mic_params(DEVICE), &inter);
    let auth = auth_for(DEVICE, &mic);
    let err = verify(
        &auth,
        &manufacturer_anchors(&[&strict_root, &inter]),
        &policy(),
    )
    .unwrap_err();
    assert!(
        matches!(
            err,
            AuthError::PathLenExceeded {
                kind: CertKind::Mic,
                ..
            }
        ),
        "{err}"
    );
    // Directly under the same root, pathlen 0 is fine.
    let mic = issue(mic_params(DEVICE), &strict_root);
    let auth = auth_for(DEVICE, &mic);
    assert_eq!(
        verify(&auth, &manufacturer_anchors(&[&strict_root]), &policy()),
        Ok(CertKind::Mic)
    );
}

#[test]
fn overlong_chain_is_not_followed() {
    // Root -> six intermediates -> MIC is longer than any path we follow.
    let root = root("Generated Root");
    let mut chain = vec![root];
    for i in 0..6 {
        let next = issue(
            params(&format!("Intermediate {i}"), ca(), CURRENT.0, CURRENT.1),
            chain.last().unwrap(),
        );
        chain.push(next);
    }
    let mic = issue(mic_params(DEVICE), chain.last().unwrap());
    let auth = auth_for(DEVICE, &mic);
    let all: Vec<&Made> = chain.iter().collect();
    assert!(matches!(
        verify(&auth, &manufacturer_anchors(&all), &policy()),
        Err(AuthError::Untrusted { .. })
    ));
    // Four intermediates are within bounds.
    let mic = issue(mic_params(DEVICE), &chain[4]);
    let auth = auth_for(DEVICE, &mic);
    assert_eq!(
        verify(&auth, &manufacturer_anchors(&all), &policy()),
        Ok(CertKind::Mic)
    );
}

#[test]
fn expired_mic_chain_needs_the_allowance() {
    // An old manufacturing CA and its MIC, both expired in 2020.
    let root = root_with(params("Old Root", ca(), (2005, 1, 1), (2020, 1, 1)));
    let mic = issue(
        params(
            &format!("CP-7970-{DEVICE}"),
            IsCa::ExplicitNoCa,
            (2006, 1, 1),
            (2020, 1, 1),
        ),
        &root,
    );
    let auth = auth_for(DEVICE, &mic);
    let anchors = manufacturer_anchors(&[&root]);
    let err = verify(&auth, &anchors, &policy()).unwrap_err();
    assert!(
        matches!(
            err,
            AuthError::Expired {
                kind: CertKind::Mic,
                ..
            }
        ),
        "{err}"
    );
    assert_eq!(err.cause(), "certificate expired");

    let short = AuthPolicy {
        mic_expiry_allowance: Duration::days(365),
        ..policy()
    };
    assert!(matches!(
        verify(&auth, &anchors, &short),
        Err(AuthError::Expired { .. })
    ));
    let generous = AuthPolicy {
        mic_expiry_allowance: Duration::days(20 * 365),
        ..policy()
    };
    assert_eq!(verify(&auth, &anchors, &generous), Ok(CertKind::Mic));
    let negative = AuthPolicy {
        mic_expiry_allowance: Duration::days(-20 * 365),
        ..policy()
    };
    assert!(matches!(
        verify(&auth, &anchors, &negative),
        Err(AuthError::Expired { .. })
    ));
}

#[test]
fn expired_lsc_chain_gets_no_allowance() {
    let issuer = root_with(params("Old CAPF", ca(), (2010, 1, 1), (2020, 1, 1)));
    let mut lsc_params = params(DEVICE, IsCa::ExplicitNoCa, (2011, 1, 1), (2030, 1, 1));
    lsc_params.distinguished_name = {
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, DEVICE);
        dn
    };
    let lsc = issue(lsc_params, &issuer);
    let auth = auth_for(DEVICE, &lsc);
    let anchors = TrustAnchors::new(vec![issuer.der.clone()], vec![]).unwrap();
    let generous = AuthPolicy {
        mic_expiry_allowance: Duration::days(20 * 365),
        ..policy()
    };
    let err = verify(&auth, &anchors, &generous).unwrap_err();
    assert!(
        matches!(err, AuthError::Expired { kind: CertKind::Lsc, ref subject } if subject.contains("Old CAPF")),
        "{err}"
    );
}

#[test]
fn ec_sudi_is_refused_not_skipped() {
    let root = root("Generated Root");
    let mic = issue(mic_params(DEVICE), &root);
    let sudi = issue(
        params(
            "CP-8845 FCH0000EC",
            IsCa::ExplicitNoCa,
            CURRENT.0,
            CURRENT.1,
        ),
        &root,
    );
    let mut auth = auth_for(DEVICE, &mic);
    auth.sudi = Some(Sudi {
        cert: sudi.der.clone(),
        sha1_sig: Vec::new(),
        sha2_id: 3,
        sha2_sig: Vec::new(),
    });
    // Validly signed with the SUDI's EC key, so only the key type is at fault.
    resign_sudi(&mut auth, &Signer::from_pkcs8(&sudi.key.serialize_der()));
    let anchors = manufacturer_anchors(&[&root]);
    assert_eq!(
        verify(&auth, &anchors, &policy()),
        Err(AuthError::SudiNotRsa)
    );
}

#[test]
fn sudi_from_unknown_manufacturer_is_untrusted() {
    // The vector's RSA SUDI, re-signed for this session, but its root is not configured.
    let root = root("Generated Root");
    let mic = issue(mic_params(DEVICE), &root);
    let vector = vector_auth("04-install-mic-auth-rsa3072.txt");
    let mut auth = auth_for(DEVICE, &mic);
    auth.sudi = vector.sudi.clone();
    resign_sudi(&mut auth, &Signer::from_pkcs8_file("certs/sudi.pem"));
    assert_eq!(
        verify(&auth, &manufacturer_anchors(&[&root]), &policy()),
        Err(AuthError::SudiUntrusted {
            problem: ChainError::NoPath
        })
    );
    // With the vector's manufacturer root added, the same SUDI verifies.
    let anchors = TrustAnchors::new(
        vec![],
        vec![root.der.clone(), cert_der("certs/mic-root.pem")],
    )
    .unwrap();
    let v = verify_certificate_auth(&auth.request(), &anchors, &policy(), now()).unwrap();
    assert!(v.sudi_verified);
}

/// Re-signs `cert` (DER) with `issuer_key` using sha1WithRSAEncryption, the way old Cisco
/// manufacturing CAs sign.
fn resign_with_sha1(cert: &[u8], issuer_key: &RsaPrivateKey) -> Vec<u8> {
    use der::{Decode, Encode};
    let mut c = x509_cert::Certificate::from_der(cert).unwrap();
    let alg = spki::AlgorithmIdentifierOwned {
        oid: const_oid::db::rfc5912::SHA_1_WITH_RSA_ENCRYPTION,
        parameters: Some(der::Any::from(der::asn1::Null)),
    };
    c.tbs_certificate.signature = alg.clone();
    c.signature_algorithm = alg;
    let tbs = c.tbs_certificate.to_der().unwrap();
    // EM = 00 01 FF..FF 00 DigestInfo(SHA-1) (RFC 8017 section 9.2, note 1 for the prefix).
    let mut digest_info = hex::decode("3021300906052b0e03021a05000414").unwrap();
    digest_info.extend_from_slice(&Sha1::digest(&tbs));
    let sig = raw_rsa_sign(issuer_key, &type1_block(issuer_key.size(), &digest_info));
    c.signature = der::asn1::BitString::from_bytes(&sig).unwrap();
    c.to_der().unwrap()
}

#[test]
fn sha1_rsa_signed_mic_is_accepted() {
    let root_key = KeyPair::generate_for(&rcgen::PKCS_RSA_SHA256).unwrap();
    let root_params = params("SHA-1 Root", ca(), CURRENT.0, CURRENT.1);
    let root_der = root_params.self_signed(&root_key).unwrap().der().to_vec();
    let root = Made {
        params: root_params,
        key: root_key,
        der: root_der,
    };
    let mic = issue(mic_params(DEVICE), &root);
    let rsa_root = RsaPrivateKey::from_pkcs8_der(&root.key.serialize_der()).unwrap();
    let sha1_mic = resign_with_sha1(&mic.der, &rsa_root);
    assert_ne!(sha1_mic, mic.der);

    let mut auth = auth_for(DEVICE, &mic);
    auth.cert = sha1_mic;
    resign_device(&mut auth, &Signer::from_pkcs8(&mic.key.serialize_der()));
    let anchors = manufacturer_anchors(&[&root]);
    assert_eq!(verify(&auth, &anchors, &policy()), Ok(CertKind::Mic));
    // The signature really is checked: one flipped bit and there is no path.
    flip_last(&mut auth.cert);
    resign_device(&mut auth, &Signer::from_pkcs8(&mic.key.serialize_der()));
    assert!(matches!(
        verify(&auth, &anchors, &policy()),
        Err(AuthError::Untrusted { .. })
    ));
}

#[test]
fn too_many_extra_certificates_are_refused() {
    let mut auth = vector_auth("04-install-mic-auth-rsa3072.txt");
    auth.extra = vec![cert_der("certs/mic-root.pem"); capf_pki::auth::MAX_EXTRA_CHAIN + 1];
    assert!(matches!(
        verify(&auth, &vector_anchors(), &policy()),
        Err(AuthError::MalformedCertificate { .. })
    ));
    auth.extra.truncate(capf_pki::auth::MAX_EXTRA_CHAIN);
    assert_eq!(
        verify(&auth, &vector_anchors(), &policy()),
        Ok(CertKind::Mic)
    );
}

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig::with_cases(48))]

    /// Any change to any byte that the signatures cover, or to a signature, is refused, and
    /// nothing panics on the way.
    #[test]
    fn any_single_byte_change_is_refused(
        which_vector in 0usize..2,
        field in 0usize..6,
        position in proptest::prelude::any::<proptest::sample::Index>(),
        xor in 1u8..=255,
    ) {
        let file = ["04-install-mic-auth-rsa3072.txt", "05-install-lsc-auth-ec-secp384r1.txt"][which_vector];
        let mut auth = vector_auth(file);
        let sudi = auth.sudi.as_mut().unwrap();
        let target: &mut Vec<u8> = match field {
            0 => &mut auth.cert,
            1 => &mut auth.sha1_sig,
            2 => &mut auth.sha2_sig,
            3 => &mut sudi.cert,
            4 => &mut sudi.sha1_sig,
            _ => &mut sudi.sha2_sig,
        };
        let at = position.index(target.len());
        target[at] ^= xor;
        let result = verify_certificate_auth(&auth.request(), &vector_anchors(), &policy(), now());
        proptest::prop_assert!(result.is_err(), "field {field} byte {at} ^ {xor:#x} accepted");
    }
}

// ---------------------------------------------------------------------------------------
// The service's own path: the AUTH_RESPONSE frame decoded by the codec, then turned into a
// certificate-authentication request by `verify_auth_response` (further certificates, SUDI
// blocks and session id as the server takes them).

/// The decoded AUTH_RESPONSE of a vector, with its session id and device name.
fn decoded_auth_response(file: &str) -> (u32, String, capf_proto::AuthResponse) {
    let text = read(file);
    let frame = text
        .lines()
        .filter_map(|l| l.strip_prefix("C>S "))
        .map(|h| hex::decode(h.trim()).unwrap())
        .find(|f| capf_proto::Command::from(f[1]) == capf_proto::Command::AuthResponse)
        .unwrap();
    let (session, message) = capf_proto::Message::decode(&frame).unwrap();
    let capf_proto::Message::AuthResponse(response) = message else {
        panic!("{file}: not an AUTH_RESPONSE");
    };
    let device = response.device_name.clone().unwrap();
    (session, device, response)
}

fn verify_through_service(
    response: &capf_proto::AuthResponse,
    device: &str,
    session: u32,
) -> Result<CertKind, AuthError> {
    capf_server::service::verify_auth_response(
        response,
        device,
        session,
        &vector_anchors(),
        &policy(),
        now(),
    )
    .expect("certificate and both signatures are present")
    .map(|v| v.kind)
}

#[test]
fn decoded_vectors_authenticate_through_the_service_path_and_tampering_is_refused() {
    for (file, kind) in [
        ("04-install-mic-auth-rsa3072.txt", CertKind::Mic),
        ("05-install-lsc-auth-ec-secp384r1.txt", CertKind::Lsc),
    ] {
        let (session, device, response) = decoded_auth_response(file);
        assert!(response.sudi.is_some(), "{file} carries SUDI");
        assert_eq!(
            verify_through_service(&response, &device, session).unwrap(),
            kind,
            "{file}"
        );

        let mut tampered = Vec::new();
        let mut r = response.clone();
        flip_last(r.signed_data.as_mut().unwrap());
        tampered.push(("SIGNED_DATA", r, session));
        let mut r = response.clone();
        flip_last(&mut r.sha2_signed_data.as_mut().unwrap().signature);
        tampered.push(("SHA2_SIGNED_DATA", r, session));
        let mut r = response.clone();
        let cert = &mut r.certificate.as_mut().unwrap().entries[0].der;
        let middle = cert.len() / 2;
        cert[middle] ^= 0x01;
        tampered.push(("certificate", r, session));
        let mut r = response.clone();
        flip_last(&mut r.sudi.as_mut().unwrap().sha1_signature);
        tampered.push(("SUDI SHA-1 signature", r, session));
        let mut r = response.clone();
        flip_last(&mut r.sudi.as_mut().unwrap().sha2_signature);
        tampered.push(("SUDI SHA-2 signature", r, session));
        // The SUDI signs the session id: another session's id is refused.
        tampered.push(("session id", response.clone(), session ^ 1));
        tampered.push((
            "session id byte order",
            response.clone(),
            session.swap_bytes(),
        ));
        for (what, r, session) in tampered {
            assert!(
                verify_through_service(&r, &device, session).is_err(),
                "{file}: tampered {what} accepted"
            );
        }
        // Another device's name over the same certificate and signatures is refused.
        assert!(verify_through_service(&response, "SEP0000000000FF", session).is_err());
    }
}
