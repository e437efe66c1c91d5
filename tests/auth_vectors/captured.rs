//! The captured vectors 04 and 05: as recorded, tampered with, and signed anew.

use super::*;

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
