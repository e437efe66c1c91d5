//! What capf does with the certificates and keys a phone sends, on arbitrary input:
//!
//! * mode 0: an AUTH_RESPONSE frame, turned into a certificate authentication request the way
//!   the service does (leaf, further certificates, SIGNED_DATA, SHA2_SIGNED_DATA, SUDI_DATA)
//!   and verified against fixed anchors (the test vectors' CAPF certificate and manufacturer
//!   CA) under a policy the input picks; seeded with the captured LSC and MIC authentications,
//!   whose signatures are valid, so mutations reach the path search, the name binding and the
//!   signature checks;
//! * mode 1: a certificate from FETCH_CERTIFICATE_RESPONSE, described for the store
//!   (`certinfo::describe`);
//! * mode 2: a public key from KEY_GENERATE_RESPONSE (`describe_public_key`,
//!   `check_public_key` against every key an operation can ask for); a key that passes is
//!   certified (`Issuer::issue_lsc`) and the LSC must be a certificate carrying that very key;
//! * mode 3: trust anchors and a leaf all from the input (`TrustAnchors::new`, path search over
//!   certificates the fuzzer controls).
#![no_main]

use std::sync::OnceLock;

use capf_pki::auth::{verify_certificate_auth, AuthPolicy, CertAuthRequest, Precedence, TrustAnchors};
use capf_pki::ca::identity::{CapfIdentity, CapfKeyAlgorithm, IdentityOptions};
use capf_pki::ca::{check_public_key, describe_public_key, Issuer};
use capf_model::keyspec::{Curve, KeySpec};
use capf_proto::Message;
use capf_server::service::verify_auth_response;
use chrono::{DateTime, Duration, TimeZone, Utc};
use libfuzzer_sys::arbitrary::Unstructured;
use libfuzzer_sys::fuzz_target;

const CAPF_PEM: &str = include_str!("../../tests/vectors/certs/capf-cert.pem");
const MIC_ROOT_PEM: &str = include_str!("../../tests/vectors/certs/mic-root.pem");

/// Every key an operation may ask a phone for.
const SPECS: [KeySpec; 7] = [
    KeySpec::Rsa(1024),
    KeySpec::Rsa(2048),
    KeySpec::Rsa(3072),
    KeySpec::Rsa(4096),
    KeySpec::Ec(Curve::P256),
    KeySpec::Ec(Curve::P384),
    KeySpec::Ec(Curve::P521),
];

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    match mode & 0x03 {
        0 => auth_response(mode, rest),
        1 => fetched_certificate(rest),
        2 => public_key(rest),
        _ => anchors_from_input(mode, rest),
    }
});

/// A fixed time inside the validity of every test-vector certificate, so runs repeat.
fn now() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2027, 1, 1, 0, 0, 0).single().unwrap_or_default()
}

fn der_of(pem_text: &str) -> Vec<u8> {
    pem::parse(pem_text).expect("test vector PEM").into_contents()
}

fn fixed_anchors() -> &'static TrustAnchors {
    static ANCHORS: OnceLock<TrustAnchors> = OnceLock::new();
    ANCHORS.get_or_init(|| {
        TrustAnchors::new(vec![der_of(CAPF_PEM)], vec![der_of(MIC_ROOT_PEM)])
            .expect("test vector anchors")
    })
}

fn policy(mode: u8) -> AuthPolicy {
    AuthPolicy {
        precedence: if mode & 0x10 == 0 {
            Precedence::Lsc
        } else {
            Precedence::Mic
        },
        require_sudi: mode & 0x20 != 0,
        mic_expiry_allowance: if mode & 0x40 == 0 {
            Duration::zero()
        } else {
            Duration::days(3650)
        },
        device_has_lsc: mode & 0x80 != 0,
    }
}

/// Mode 0: an AUTH_RESPONSE verified the way `Service::check_credentials` does it.
fn auth_response(mode: u8, frame: &[u8]) {
    let Ok((session_id, Message::AuthResponse(response))) = Message::decode(frame) else {
        return;
    };
    let Some(device) = response.device_name.as_deref() else {
        return;
    };
    let Some(verified) = verify_auth_response(
        &response,
        device,
        session_id,
        fixed_anchors(),
        &policy(mode),
        now(),
    ) else {
        return;
    };
    match verified {
        Ok(verified) => {
            assert_eq!(verified.fingerprint_sha256.len(), 64);
            let _ = (verified.kind.as_str(), verified.subject, verified.serial_hex);
        }
        Err(e) => {
            // Every failure maps to a cause for the status and the log.
            let _ = (e.cause(), e.cert_kind(), e.to_string());
        }
    }
}

/// Mode 1: a fetched certificate as the store records it.
fn fetched_certificate(der: &[u8]) {
    if let Ok(info) = capf_server::certinfo::describe(der) {
        assert_eq!(info.fingerprint_sha256.len(), 64);
        let _ = (&info.serial_hex, &info.subject, &info.issuer, info.not_after);
        let back = pem::parse(&info.pem).expect("describe writes PEM");
        assert_eq!(back.contents(), der, "the PEM recorded is the certificate received");
    }
}

fn issuer() -> &'static Issuer {
    static ISSUER: OnceLock<Issuer> = OnceLock::new();
    ISSUER.get_or_init(|| {
        // A throwaway EC identity (fast to sign with), created once per fuzzing process.
        let dir = std::env::temp_dir().join(format!("capf-fuzz-issuer-{}", std::process::id()));
        let options = IdentityOptions {
            key: CapfKeyAlgorithm::EcP256,
            ..IdentityOptions::default()
        };
        let (identity, _) = CapfIdentity::load_or_create(&dir, &options).expect("CAPF identity");
        let issuer = identity.issuer().clone();
        let _ = std::fs::remove_dir_all(&dir);
        issuer
    })
}

/// Mode 2: a phone's public key, checked and, when acceptable, certified.
fn public_key(spki: &[u8]) {
    let described = describe_public_key(spki);
    for spec in SPECS {
        let checked = check_public_key(spki, spec);
        // The check accepts exactly the key the description names.
        assert_eq!(checked.is_ok(), described.as_ref() == Ok(&spec), "{spec}");
    }
    if described.is_ok() {
        let issued = issuer()
            .issue_lsc("SEP001122334455", spki, 365, now())
            .expect("a checked key is certified");
        let info = capf_server::certinfo::describe(&issued.der).expect("the LSC is DER");
        assert_eq!(info.fingerprint_sha256, issued.fingerprint_sha256);
        assert!(
            issued.der.windows(spki.len()).any(|w| w == spki),
            "the LSC carries the phone's key unchanged"
        );
    }
}

/// Mode 3: anchors and leaf from the input: up to three LSC issuers, three manufacturer
/// certificates, a leaf and three further certificates.
fn anchors_from_input(mode: u8, rest: &[u8]) {
    let mut u = Unstructured::new(rest);
    let mut take = |max: usize| -> Vec<Vec<u8>> {
        let n = u.int_in_range(0..=max).unwrap_or(0);
        (0..n).filter_map(|_| u.arbitrary::<Vec<u8>>().ok()).collect()
    };
    let lsc = take(3);
    let manufacturer = take(3);
    let leaf = take(1).pop().unwrap_or_default();
    let extra = take(3);
    let Ok(anchors) = TrustAnchors::new(lsc, manufacturer) else {
        return;
    };
    let _ = (anchors.lsc_issuer_count(), anchors.manufacturer_count());
    let request = CertAuthRequest {
        device_name: "SEP001122334455",
        certificate: &leaf,
        extra_chain: &extra,
        signed_data: &[1],
        sha2_hash_id: 3,
        sha2_signature: &[1],
        sudi: None,
        session_id: 1,
    };
    if let Err(e) = verify_certificate_auth(&request, &anchors, &policy(mode), now()) {
        let _ = (e.cause(), e.to_string());
    }
}
