//! Certificate hierarchies generated here: path building, CA constraints, validity, SUDI.

use super::*;

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

// RFC 5280 path rules (issue 20): unknown critical extensions, name constraints, the leaf's
// key usage and extended key usage.

/// An extension no one knows (a private arc), marked critical or not.
fn unknown_extension(critical: bool) -> rcgen::CustomExtension {
    let mut ext =
        rcgen::CustomExtension::from_oid_content(&[1, 3, 6, 1, 4, 1, 99999, 1], vec![0x05, 0x00]);
    ext.set_criticality(critical);
    ext
}

/// Authenticates with `mic` against `root` as the only manufacturer root.
fn verify_under(mic: &Made, root: &Made) -> Result<CertKind, AuthError> {
    verify(
        &auth_for(DEVICE, mic),
        &manufacturer_anchors(&[root]),
        &policy(),
    )
}

fn refused_by(result: Result<CertKind, AuthError>) -> ChainError {
    match result {
        Err(AuthError::PathRefused {
            kind: CertKind::Mic,
            problem,
        }) => problem,
        other => panic!("not refused by a path rule: {other:?}"),
    }
}

#[test]
fn an_unknown_critical_extension_refuses_the_certificate_at_every_level() {
    // On the MIC itself: refused; the same extension not critical: accepted.
    let root = root("Generated Root");
    for critical in [true, false] {
        let mut params = mic_params(DEVICE);
        params.custom_extensions.push(unknown_extension(critical));
        let mic = issue(params, &root);
        let result = verify_under(&mic, &root);
        if critical {
            let problem = refused_by(result);
            assert!(
                matches!(&problem, ChainError::UnknownCriticalExtension { oid, .. } if oid == "1.3.6.1.4.1.99999.1"),
                "{problem:?}"
            );
        } else {
            assert_eq!(result, Ok(CertKind::Mic));
        }
    }

    // On an intermediate between the root and the MIC.
    let mut ca_params = params("Generated Intermediate", ca(), CURRENT.0, CURRENT.1);
    ca_params.custom_extensions.push(unknown_extension(true));
    let intermediate = issue(ca_params, &root);
    let mic = issue(mic_params(DEVICE), &intermediate);
    let mut auth = auth_for(DEVICE, &mic);
    auth.extra = vec![intermediate.der.clone()];
    assert!(matches!(
        refused_by(verify(&auth, &manufacturer_anchors(&[&root]), &policy())),
        ChainError::UnknownCriticalExtension { .. }
    ));

    // On the root (the trust anchor) itself.
    let mut root_params = params("Generated Critical Root", ca(), CURRENT.0, CURRENT.1);
    root_params.custom_extensions.push(unknown_extension(true));
    let critical_root = root_with(root_params);
    let mic = issue(mic_params(DEVICE), &critical_root);
    assert!(matches!(
        refused_by(verify_under(&mic, &critical_root)),
        ChainError::UnknownCriticalExtension { .. }
    ));
}

#[test]
fn name_constraints_of_a_ca_bind_the_certificates_below_it() {
    let constrained = |permitted: Vec<rcgen::GeneralSubtree>,
                       excluded: Vec<rcgen::GeneralSubtree>| {
        let mut p = params("Constrained Root", ca(), CURRENT.0, CURRENT.1);
        p.name_constraints = Some(rcgen::NameConstraints {
            permitted_subtrees: permitted,
            excluded_subtrees: excluded,
        });
        root_with(p)
    };
    let manufacturer = || {
        let mut dn = DistinguishedName::new();
        dn.push(DnType::OrganizationName, "Generated Manufacturer");
        rcgen::GeneralSubtree::DirectoryName(dn)
    };
    let other = || {
        let mut dn = DistinguishedName::new();
        dn.push(DnType::OrganizationName, "Someone Else");
        rcgen::GeneralSubtree::DirectoryName(dn)
    };

    // Permitted: the MIC's subject starts with O=Generated Manufacturer.
    let root = constrained(vec![manufacturer()], vec![]);
    let mic = issue(mic_params(DEVICE), &root);
    assert_eq!(verify_under(&mic, &root), Ok(CertKind::Mic));
    // Outside the permitted subtree.
    let root = constrained(vec![other()], vec![]);
    let mic = issue(mic_params(DEVICE), &root);
    assert!(matches!(
        refused_by(verify_under(&mic, &root)),
        ChainError::NameNotPermitted { .. }
    ));
    // Inside an excluded subtree.
    let root = constrained(vec![], vec![manufacturer()]);
    let mic = issue(mic_params(DEVICE), &root);
    assert!(matches!(
        refused_by(verify_under(&mic, &root)),
        ChainError::NameNotPermitted { .. }
    ));
    // A DNS constraint binds the MIC's DNS names, and only those.
    let root = constrained(
        vec![rcgen::GeneralSubtree::DnsName("phones.example".into())],
        vec![],
    );
    let mut params = mic_params(DEVICE);
    params.subject_alt_names = vec![rcgen::SanType::DnsName(
        "sep1.phones.example".try_into().unwrap(),
    )];
    let inside = issue(params, &root);
    assert_eq!(verify_under(&inside, &root), Ok(CertKind::Mic));
    let mut params = mic_params(DEVICE);
    params.subject_alt_names = vec![rcgen::SanType::DnsName(
        "sep1.elsewhere.example".try_into().unwrap(),
    )];
    let outside = issue(params, &root);
    assert!(matches!(
        refused_by(verify_under(&outside, &root)),
        ChainError::NameNotPermitted { .. }
    ));
}

#[test]
fn the_phone_certificate_must_allow_signing_and_client_authentication() {
    let root = root("Generated Root");
    // Key usage without digitalSignature (the phone signs its AUTH_RESPONSE with this key).
    let mut params = mic_params(DEVICE);
    params.key_usages = vec![KeyUsagePurpose::KeyEncipherment];
    let mic = issue(params, &root);
    assert!(matches!(
        refused_by(verify_under(&mic, &root)),
        ChainError::LeafUsage { .. }
    ));
    // Extended key usage listing purposes, none of them client authentication.
    let mut params = mic_params(DEVICE);
    params.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ServerAuth];
    let mic = issue(params, &root);
    assert!(matches!(
        refused_by(verify_under(&mic, &root)),
        ChainError::LeafUsage { .. }
    ));
    // Client authentication among them: accepted.
    let mut params = mic_params(DEVICE);
    params.extended_key_usages = vec![
        rcgen::ExtendedKeyUsagePurpose::ServerAuth,
        rcgen::ExtendedKeyUsagePurpose::ClientAuth,
    ];
    let mic = issue(params, &root);
    assert_eq!(verify_under(&mic, &root), Ok(CertKind::Mic));
}
