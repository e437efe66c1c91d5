//! The CAPF identity on disk and the LSCs it issues, checked field by field with x509-cert,
//! against the reference's LSCs in tests/vectors, and with the `openssl` CLI.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use capf_model::keyspec::{Curve, KeySpec};
use capf_pki::ca::identity::load_issuer;
use capf_pki::ca::{
    CapfIdentity, CapfKeyAlgorithm, IdentityError, IdentityOptions, IssuedLsc, Issuer, Loaded,
    PhoneKey, SubjectFields,
};
use chrono::{DateTime, Duration, TimeZone, Utc};
use der::{Decode, Encode, Tagged};
use sha2::{Digest, Sha256};
use x509_cert::ext::pkix::name::GeneralName;
use x509_cert::ext::pkix::{BasicConstraints, ExtendedKeyUsage, KeyUsage, SubjectAltName};
use x509_cert::Certificate;

fn vectors() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/vectors")
}

fn pem_blocks(path: &Path) -> Vec<pem::Pem> {
    pem::parse_many(fs::read(path).unwrap()).unwrap()
}

fn pem_block(path: &Path, tag: &str) -> pem::Pem {
    pem_blocks(path)
        .into_iter()
        .find(|b| b.tag() == tag)
        .unwrap_or_else(|| panic!("no {tag} in {}", path.display()))
}

fn openssl(args: &[&str]) -> (bool, String) {
    let out = Command::new("openssl")
        .args(args)
        .output()
        .expect("the openssl CLI must be installed");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

fn openssl_hash(cert: &Path) -> String {
    let (ok, out) = openssl(&["x509", "-noout", "-hash", "-in", cert.to_str().unwrap()]);
    assert!(ok, "{out}");
    out.trim().to_string()
}

fn mode(path: &Path) -> u32 {
    fs::metadata(path).unwrap().permissions().mode() & 0o777
}

fn options(key: CapfKeyAlgorithm) -> IdentityOptions {
    IdentityOptions {
        key,
        subject: SubjectFields {
            organization: Some("Example Voice Ltd".into()),
            organizational_unit: Some("Telephony".into()),
            locality: Some("Wellington".into()),
            state: Some("Wellington".into()),
            country: Some("NZ".into()),
        },
        validity_days: 1825,
    }
}

fn extension<'a>(cert: &'a Certificate, oid: &str) -> &'a x509_cert::ext::Extension {
    let oid = der::asn1::ObjectIdentifier::new(oid).unwrap();
    cert.tbs_certificate
        .extensions
        .as_ref()
        .unwrap()
        .iter()
        .find(|e| e.extn_id == oid)
        .unwrap()
}

fn to_utc(t: &x509_cert::time::Time) -> DateTime<Utc> {
    let secs = t.to_unix_duration().as_secs();
    Utc.timestamp_opt(i64::try_from(secs).unwrap(), 0).unwrap()
}

#[test]
fn create_then_load_for_every_key_algorithm() {
    for alg in [
        CapfKeyAlgorithm::Rsa2048,
        CapfKeyAlgorithm::Rsa3072,
        CapfKeyAlgorithm::Rsa4096,
        CapfKeyAlgorithm::EcP256,
        CapfKeyAlgorithm::EcP384,
    ] {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("certs");
        let before = Utc::now();
        let (id, loaded) = CapfIdentity::load_or_create(&dir, &options(alg)).unwrap();
        assert_eq!(loaded, Loaded::Created);
        assert_eq!(mode(&dir), 0o700);
        assert_eq!(mode(&dir.join("capf.key")), 0o600);

        // Files: PEM, DER, hash link and a PKCS#8 key matching the certificate.
        let cert_pem = fs::read_to_string(dir.join("capf.pem")).unwrap();
        assert_eq!(cert_pem, id.cert_pem());
        assert_eq!(
            pem_block(&dir.join("capf.pem"), "CERTIFICATE").contents(),
            id.cert_der()
        );
        assert_eq!(fs::read(dir.join("capf.cer")).unwrap(), id.cert_der());
        let hash = openssl_hash(&dir.join("capf.pem"));
        assert_eq!(id.subject_hash(), hash);
        assert_eq!(
            fs::read_to_string(dir.join(format!("{hash}.0"))).unwrap(),
            cert_pem
        );
        let key = pem_block(&dir.join("capf.key"), "PRIVATE KEY");
        assert_eq!(key.contents(), id.key_pkcs8_der());
        let leftovers: Vec<_> = fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .filter(|n| n.ends_with(".tmp"))
            .collect();
        assert!(leftovers.is_empty(), "{leftovers:?}");

        // Certificate fields.
        let cert = Certificate::from_der(id.cert_der()).unwrap();
        let tbs = &cert.tbs_certificate;
        assert_eq!(tbs.version, x509_cert::Version::V3);
        assert_eq!(tbs.issuer, tbs.subject);
        let serial = tbs.serial_number.as_bytes();
        assert!(serial[0] & 0x80 == 0 && serial.len() <= 17 && serial.len() >= 8);
        let subject = id.subject_string();
        let prefix =
            "C=NZ, ST=Wellington, L=Wellington, O=Example Voice Ltd, OU=Telephony, CN=CAPF-";
        assert!(subject.starts_with(prefix), "{subject}");
        let cn_suffix = &subject[prefix.len()..];
        assert_eq!(cn_suffix.len(), 8);
        assert!(cn_suffix
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)));
        let sig_oid = cert.signature_algorithm.oid.to_string();
        match alg {
            CapfKeyAlgorithm::EcP256 => assert_eq!(sig_oid, "1.2.840.10045.4.3.2"),
            // aws-lc-rs signs with P-384 only over SHA-384.
            CapfKeyAlgorithm::EcP384 => assert_eq!(sig_oid, "1.2.840.10045.4.3.3"),
            _ => {
                assert_eq!(sig_oid, "1.2.840.113549.1.1.11");
                assert!(cert
                    .signature_algorithm
                    .parameters
                    .as_ref()
                    .unwrap()
                    .is_null());
            }
        }
        let not_before = to_utc(&tbs.validity.not_before);
        let not_after = to_utc(&tbs.validity.not_after);
        assert!(not_before <= before - Duration::minutes(4));
        assert!(not_before >= before - Duration::minutes(6));
        let days = (not_after - not_before - Duration::minutes(5)).num_days();
        assert_eq!(days, 1825);
        assert_eq!(id.not_after(), not_after);

        let bc_ext = extension(&cert, "2.5.29.19");
        assert!(bc_ext.critical);
        let bc = BasicConstraints::from_der(bc_ext.extn_value.as_bytes()).unwrap();
        assert!(bc.ca);
        assert_eq!(bc.path_len_constraint, Some(0));
        let ku_ext = extension(&cert, "2.5.29.15");
        assert!(ku_ext.critical);
        let ku = KeyUsage::from_der(ku_ext.extn_value.as_bytes()).unwrap();
        assert!(ku.digital_signature() && ku.key_encipherment());
        assert!(ku.key_cert_sign() && ku.crl_sign());
        assert!(!ku.non_repudiation() && !ku.data_encipherment() && !ku.key_agreement());
        let ski = extension(&cert, "2.5.29.14");
        assert!(!ski.critical);
        let key_bits = tbs.subject_public_key_info.subject_public_key.raw_bytes();
        let expected_ski = der::asn1::OctetString::new(sha1::Sha1::digest(key_bits).to_vec())
            .unwrap()
            .to_der()
            .unwrap();
        assert_eq!(ski.extn_value.as_bytes(), expected_ski);
        assert_eq!(tbs.extensions.as_ref().unwrap().len(), 3);

        // OpenSSL agrees it is a valid self-signed CA.
        let capf = dir.join("capf.pem");
        let (ok, out) = openssl(&[
            "verify",
            "-CAfile",
            capf.to_str().unwrap(),
            capf.to_str().unwrap(),
        ]);
        assert!(ok, "{alg}: {out}");
        let (ok, out) = openssl(&[
            "verify",
            "-CApath",
            dir.to_str().unwrap(),
            capf.to_str().unwrap(),
        ]);
        assert!(ok, "CApath via <hash>.0: {out}");

        // Second start: the same identity is loaded, nothing is rewritten.
        let (again, loaded) = CapfIdentity::load_or_create(&dir, &options(alg)).unwrap();
        assert_eq!(loaded, Loaded::Existing);
        assert_eq!(again.cert_der(), id.cert_der());
        assert_eq!(again.key_pkcs8_der(), id.key_pkcs8_der());
        assert_eq!(again.subject_hash(), id.subject_hash());
        assert_eq!(
            again.signer().public_key_spki_der(),
            id.signer().public_key_spki_der()
        );

        // Debug output never shows the key.
        let debug = format!("{id:?}");
        assert!(debug.contains("CAPF-"));
        assert!(!debug.contains(&hex::encode(&id.key_pkcs8_der()[..16])));
    }
}

#[test]
fn load_refusals() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let opts = options(CapfKeyAlgorithm::EcP256);
    CapfIdentity::load_or_create(dir, &opts).unwrap();
    let key = dir.join("capf.key");
    let cert = dir.join("capf.pem");

    // Group/other access to the key.
    for bad_mode in [0o640, 0o604, 0o660, 0o644] {
        fs::set_permissions(&key, fs::Permissions::from_mode(bad_mode)).unwrap();
        match CapfIdentity::load_or_create(dir, &opts) {
            Err(IdentityError::InsecureKeyPermissions { path, mode }) => {
                assert_eq!(path, key);
                assert_eq!(mode, bad_mode);
            }
            other => panic!("expected InsecureKeyPermissions, got {other:?}"),
        }
    }
    fs::set_permissions(&key, fs::Permissions::from_mode(0o400)).unwrap();
    CapfIdentity::load_or_create(dir, &opts).unwrap();
    fs::set_permissions(&key, fs::Permissions::from_mode(0o600)).unwrap();

    // A key from another identity.
    let other = tempfile::tempdir().unwrap();
    CapfIdentity::load_or_create(other.path(), &opts).unwrap();
    let original_key = fs::read(&key).unwrap();
    fs::write(&key, fs::read(other.path().join("capf.key")).unwrap()).unwrap();
    assert!(matches!(
        CapfIdentity::load_or_create(dir, &opts),
        Err(IdentityError::KeyMismatch { .. })
    ));
    fs::write(&key, &original_key).unwrap();

    // Unparseable files.
    let original_cert = fs::read(&cert).unwrap();
    fs::write(
        &cert,
        "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n",
    )
    .unwrap();
    assert!(matches!(
        CapfIdentity::load_or_create(dir, &opts),
        Err(IdentityError::Certificate { .. })
    ));
    fs::write(&cert, &original_cert).unwrap();
    fs::write(
        &key,
        "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n",
    )
    .unwrap();
    let err = CapfIdentity::load_or_create(dir, &opts).unwrap_err();
    assert!(matches!(err, IdentityError::Key { .. }), "{err:?}");
    fs::write(&key, &original_key).unwrap();

    // Exactly one of the pair missing.
    fs::rename(&cert, dir.join("moved.pem")).unwrap();
    match CapfIdentity::load_or_create(dir, &opts) {
        Err(IdentityError::Incomplete { present, missing }) => {
            assert_eq!(present, key);
            assert_eq!(missing, cert);
        }
        other => panic!("expected Incomplete, got {other:?}"),
    }
    fs::rename(dir.join("moved.pem"), &cert).unwrap();
    fs::rename(&key, dir.join("moved.key")).unwrap();
    assert!(matches!(
        CapfIdentity::load_or_create(dir, &opts),
        Err(IdentityError::Incomplete { .. })
    ));
    fs::rename(dir.join("moved.key"), &key).unwrap();

    // Error messages never carry key material.
    let key_text = String::from_utf8(original_key).unwrap();
    let body_line = key_text.lines().nth(1).unwrap();
    fs::set_permissions(&key, fs::Permissions::from_mode(0o644)).unwrap();
    let message = CapfIdentity::load_or_create(dir, &opts)
        .unwrap_err()
        .to_string();
    assert!(message.contains("chmod 600"), "{message}");
    assert!(!message.contains(body_line));
}

#[test]
fn derived_files_are_regenerated() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let opts = options(CapfKeyAlgorithm::EcP256);
    let (id, _) = CapfIdentity::load_or_create(dir, &opts).unwrap();
    let hash_file = dir.join(format!("{}.0", id.subject_hash()));
    fs::remove_file(dir.join("capf.cer")).unwrap();
    fs::remove_file(&hash_file).unwrap();
    let (_, loaded) = CapfIdentity::load_or_create(dir, &opts).unwrap();
    assert_eq!(loaded, Loaded::Existing);
    assert_eq!(fs::read(dir.join("capf.cer")).unwrap(), id.cert_der());
    assert_eq!(fs::read_to_string(&hash_file).unwrap(), id.cert_pem());
}

/// Rewrites a key file in another format with `openssl <args> -in key -out key`.
fn rewrite_key(key_path: &Path, args: &[&str]) {
    let converted = key_path.with_extension("converted");
    let mut all = args.to_vec();
    all.extend(["-in", key_path.to_str().unwrap()]);
    all.extend(["-out", converted.to_str().unwrap()]);
    let (ok, out) = openssl(&all);
    assert!(ok, "{out}");
    fs::rename(&converted, key_path).unwrap();
}

/// The reference's CAPF certificate and key (one file) split into our layout, and the key in
/// the traditional PKCS#1 form OpenSSL writes with `-traditional`.
#[test]
fn loads_the_reference_identity_in_several_key_formats() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let source = vectors().join("certs/capf.pem");
    let cert = pem_block(&source, "CERTIFICATE");
    let key = pem_block(&source, "PRIVATE KEY");
    fs::write(dir.join("capf.pem"), pem::encode(&cert)).unwrap();
    let key_path = dir.join("capf.key");
    fs::write(&key_path, pem::encode(&key)).unwrap();
    fs::set_permissions(&key_path, fs::Permissions::from_mode(0o600)).unwrap();

    let (id, loaded) = CapfIdentity::load_or_create(dir, &IdentityOptions::default()).unwrap();
    assert_eq!(loaded, Loaded::Existing);
    assert_eq!(id.cert_der(), cert.contents());
    assert_eq!(
        id.subject_hash(),
        openssl_hash(&vectors().join("certs/capf-cert.pem"))
    );
    assert_eq!(id.subject_hash(), "f845082b");
    assert_eq!(
        id.subject_string(),
        "C=NZ, ST=Wellington, L=Wellington, O=Example Voice Ltd, OU=Telephony, CN=CAPF-test"
    );
    assert!(dir.join("f845082b.0").exists());
    assert!(dir.join("capf.cer").exists());

    rewrite_key(&key_path, &["pkey", "-traditional"]);
    assert!(fs::read_to_string(&key_path)
        .unwrap()
        .starts_with("-----BEGIN RSA PRIVATE KEY-----"));
    fs::set_permissions(&key_path, fs::Permissions::from_mode(0o600)).unwrap();
    let (pkcs1, _) = CapfIdentity::load_or_create(dir, &IdentityOptions::default()).unwrap();
    assert_eq!(pkcs1.cert_der(), id.cert_der());
    // key_pkcs8_der is always PKCS#8, whatever the file held.
    assert_eq!(pkcs1.key_pkcs8_der(), id.key_pkcs8_der());
}

#[test]
fn loads_sec1_ec_keys() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let opts = options(CapfKeyAlgorithm::EcP384);
    let (id, _) = CapfIdentity::load_or_create(dir, &opts).unwrap();
    let key_path = dir.join("capf.key");
    rewrite_key(&key_path, &["ec"]);
    assert!(fs::read_to_string(&key_path)
        .unwrap()
        .starts_with("-----BEGIN EC PRIVATE KEY-----"));
    fs::set_permissions(&key_path, fs::Permissions::from_mode(0o600)).unwrap();
    let (again, _) = CapfIdentity::load_or_create(dir, &opts).unwrap();
    assert_eq!(
        again.signer().public_key_spki_der(),
        id.signer().public_key_spki_der()
    );
}

/// Checks every field of an LSC against the profile of spec section 6.
fn check_lsc_profile(
    lsc: &IssuedLsc,
    issuer_cert_der: &[u8],
    device: &str,
    spki: &[u8],
    now: DateTime<Utc>,
    days: u32,
) -> Certificate {
    let cert = Certificate::from_der(&lsc.der).unwrap();
    let issuer = Certificate::from_der(issuer_cert_der).unwrap();
    let tbs = &cert.tbs_certificate;
    assert_eq!(tbs.version, x509_cert::Version::V3);

    // Serial: 16 random bytes as a positive INTEGER.
    let serial = tbs.serial_number.as_bytes();
    assert!(serial[0] & 0x80 == 0);
    assert!(serial.len() <= 17);
    if serial.len() == 17 {
        assert_eq!(serial[0], 0);
    }
    let magnitude = serial.strip_prefix(&[0]).unwrap_or(serial);
    assert_eq!(lsc.serial_hex, hex::encode(magnitude));

    // Signature algorithm as the issuer key dictates, in both places.
    assert_eq!(tbs.signature, cert.signature_algorithm);

    // Issuer: the issuer certificate's SUBJECT, byte for byte.
    assert_eq!(
        tbs.issuer.to_der().unwrap(),
        issuer.tbs_certificate.subject.to_der().unwrap()
    );

    // Validity.
    assert!(matches!(
        tbs.validity.not_before,
        x509_cert::time::Time::UtcTime(_)
    ));
    assert!(matches!(
        tbs.validity.not_after,
        x509_cert::time::Time::UtcTime(_)
    ));
    let now_s = Utc.timestamp_opt(now.timestamp(), 0).unwrap();
    assert_eq!(
        to_utc(&tbs.validity.not_before),
        now_s - Duration::minutes(5)
    );
    assert_eq!(
        to_utc(&tbs.validity.not_after),
        now_s + Duration::days(i64::from(days))
    );
    assert_eq!(lsc.not_before, now_s - Duration::minutes(5));
    assert_eq!(lsc.not_after, now_s + Duration::days(i64::from(days)));

    // Subject: CN=<device> (UTF8String) first, then the issuer's C/ST/L/O/OU as they were.
    let rdns = &tbs.subject.0;
    let first = rdns[0].0.get(0).unwrap();
    assert_eq!(first.oid.to_string(), "2.5.4.3");
    assert_eq!(first.value.tag(), der::Tag::Utf8String);
    assert_eq!(first.value.value(), device.as_bytes());
    let copied: Vec<_> = issuer
        .tbs_certificate
        .subject
        .0
        .iter()
        .flat_map(|rdn| rdn.0.iter())
        .filter(|atv| {
            ["2.5.4.6", "2.5.4.8", "2.5.4.7", "2.5.4.10", "2.5.4.11"]
                .contains(&atv.oid.to_string().as_str())
        })
        .cloned()
        .collect();
    let rest: Vec<_> = rdns[1..]
        .iter()
        .map(|rdn| {
            assert_eq!(rdn.0.len(), 1, "one attribute per RDN");
            rdn.0.get(0).unwrap().clone()
        })
        .collect();
    assert_eq!(rest, copied);

    // Public key unchanged.
    assert_eq!(tbs.subject_public_key_info.to_der().unwrap(), spki);
    assert!(tbs.issuer_unique_id.is_none() && tbs.subject_unique_id.is_none());

    // Extensions, exactly these, in this order.
    let exts = tbs.extensions.as_ref().unwrap();
    let ids: Vec<String> = exts.iter().map(|e| e.extn_id.to_string()).collect();
    assert_eq!(ids, ["2.5.29.19", "2.5.29.15", "2.5.29.37", "2.5.29.17"]);
    let crit: Vec<bool> = exts.iter().map(|e| e.critical).collect();
    assert_eq!(crit, [true, true, false, false]);
    let bc = BasicConstraints::from_der(exts[0].extn_value.as_bytes()).unwrap();
    assert!(!bc.ca && bc.path_len_constraint.is_none());
    let ku = KeyUsage::from_der(exts[1].extn_value.as_bytes()).unwrap();
    assert!(ku.digital_signature() && ku.key_encipherment());
    assert!(!ku.key_cert_sign() && !ku.crl_sign() && !ku.non_repudiation());
    assert!(!ku.data_encipherment() && !ku.key_agreement());
    let eku = ExtendedKeyUsage::from_der(exts[2].extn_value.as_bytes()).unwrap();
    let purposes: Vec<String> = eku.0.iter().map(|o| o.to_string()).collect();
    assert_eq!(
        purposes,
        [
            "1.3.6.1.5.5.7.3.1",
            "1.3.6.1.5.5.7.3.2",
            "1.3.6.1.5.5.7.3.5"
        ]
    );
    let san = SubjectAltName::from_der(exts[3].extn_value.as_bytes()).unwrap();
    assert_eq!(san.0.len(), 1);
    match &san.0[0] {
        GeneralName::UniformResourceIdentifier(uri) => assert_eq!(uri.as_str(), device),
        other => panic!("unexpected SAN {other:?}"),
    }

    // Derived fields.
    assert_eq!(
        lsc.fingerprint_sha256,
        hex::encode(Sha256::digest(&lsc.der))
    );
    let pem = pem::parse(&lsc.pem).unwrap();
    assert_eq!(pem.tag(), "CERTIFICATE");
    assert_eq!(pem.contents(), lsc.der.as_slice());
    assert!(lsc.subject.starts_with(&format!("CN={device}")));
    cert
}

fn write_lsc(dir: &Path, lsc: &IssuedLsc) -> PathBuf {
    let path = dir.join("lsc.pem");
    fs::write(&path, &lsc.pem).unwrap();
    path
}

/// The reference's issuer and the phones' keys from the vectors: our LSC must equal the
/// reference's except for serial, dates and signature (the issuer is self-signed there, so the
/// reference's issuer bug does not show).
#[test]
fn lsc_matches_the_reference_lscs() {
    let tmp = tempfile::tempdir().unwrap();
    let source = vectors().join("certs/capf.pem");
    let cert_path = tmp.path().join("issuer.pem");
    let key_path = tmp.path().join("issuer.key");
    fs::write(&cert_path, pem::encode(&pem_block(&source, "CERTIFICATE"))).unwrap();
    fs::write(&key_path, pem::encode(&pem_block(&source, "PRIVATE KEY"))).unwrap();
    fs::set_permissions(&key_path, fs::Permissions::from_mode(0o600)).unwrap();
    let issuer = load_issuer(&cert_path, &key_path).unwrap();
    assert_eq!(
        issuer.cert_der(),
        pem_block(&source, "CERTIFICATE").contents()
    );

    let now = Utc.with_ymd_and_hms(2026, 11, 21, 23, 1, 44).unwrap();
    for (file, device) in [
        ("01-SEP001122334455-rsa2048.pem", "SEP001122334455"),
        ("02-SEP00112233AABB-p256.pem", "SEP00112233AABB"),
        ("04-SEP001122334455-rsa3072.pem", "SEP001122334455"),
        ("05-SEP00112233AABB-p384.pem", "SEP00112233AABB"),
    ] {
        let reference_der =
            pem_block(&vectors().join("device").join(file), "CERTIFICATE").into_contents();
        let reference = Certificate::from_der(&reference_der).unwrap();
        let spki = reference
            .tbs_certificate
            .subject_public_key_info
            .to_der()
            .unwrap();
        let lsc = issuer.issue_lsc(device, &spki, 365, now).unwrap();
        let ours = check_lsc_profile(&lsc, issuer.cert_der(), device, &spki, now, 365);
        let (a, b) = (&ours.tbs_certificate, &reference.tbs_certificate);
        assert_eq!(a.version, b.version);
        assert_eq!(a.signature, b.signature);
        assert_eq!(a.issuer.to_der().unwrap(), b.issuer.to_der().unwrap());
        assert_eq!(
            a.subject.to_der().unwrap(),
            b.subject.to_der().unwrap(),
            "{file}"
        );
        assert_eq!(
            a.subject_public_key_info.to_der().unwrap(),
            b.subject_public_key_info.to_der().unwrap()
        );
        assert_eq!(
            a.extensions.to_der().unwrap(),
            b.extensions.to_der().unwrap(),
            "{file}: extensions must be byte-identical to the reference"
        );
        assert_eq!(ours.signature_algorithm, reference.signature_algorithm);
        assert_eq!(
            lsc.subject,
            format!(
                "CN={device}, C=NZ, ST=Wellington, L=Wellington, O=Example Voice Ltd, OU=Telephony"
            )
        );
        assert_eq!(
            lsc.issuer,
            "C=NZ, ST=Wellington, L=Wellington, O=Example Voice Ltd, OU=Telephony, CN=CAPF-test"
        );

        let lsc_path = write_lsc(tmp.path(), &lsc);
        let (ok, out) = openssl(&[
            "verify",
            "-attime",
            &(now.timestamp() + 60).to_string(),
            "-CAfile",
            vectors().join("certs/capf-cert.pem").to_str().unwrap(),
            lsc_path.to_str().unwrap(),
        ]);
        assert!(ok, "{file}: {out}");
    }
}

/// LSCs from freshly created identities (RSA and EC issuers) for every phone key type, and
/// `openssl verify -CAfile capf.pem lsc.pem`.
#[test]
fn created_identity_issues_verifiable_lscs() {
    for alg in [
        CapfKeyAlgorithm::Rsa2048,
        CapfKeyAlgorithm::EcP256,
        CapfKeyAlgorithm::EcP384,
    ] {
        let tmp = tempfile::tempdir().unwrap();
        let (id, _) = CapfIdentity::load_or_create(tmp.path(), &options(alg)).unwrap();
        let issuer = id.issuer().clone();
        assert_eq!(issuer.cert_der(), id.cert_der());
        for spec in [
            KeySpec::Rsa(2048),
            KeySpec::Ec(Curve::P256),
            KeySpec::Ec(Curve::P384),
            KeySpec::Ec(Curve::P521),
        ] {
            let phone = PhoneKey::generate(spec).unwrap();
            let spki = phone.spki_der();
            let now = Utc::now();
            let lsc = issuer
                .issue_lsc("SEP00112233AABB", &spki, 730, now)
                .unwrap();
            check_lsc_profile(&lsc, id.cert_der(), "SEP00112233AABB", &spki, now, 730);
            assert_eq!(
                lsc.subject,
                "CN=SEP00112233AABB, C=NZ, ST=Wellington, L=Wellington, O=Example Voice Ltd, OU=Telephony"
            );
            assert_eq!(lsc.issuer, id.subject_string());
            let lsc_path = write_lsc(tmp.path(), &lsc);
            let capf = tmp.path().join("capf.pem");
            let (ok, out) = openssl(&[
                "verify",
                "-CAfile",
                capf.to_str().unwrap(),
                lsc_path.to_str().unwrap(),
            ]);
            assert!(ok, "{alg} issuing {spec}: {out}");
            let (ok, out) = openssl(&[
                "verify",
                "-purpose",
                "sslclient",
                "-CAfile",
                capf.to_str().unwrap(),
                lsc_path.to_str().unwrap(),
            ]);
            assert!(ok, "{alg} issuing {spec} as TLS client: {out}");
        }
    }
}

/// A separate intermediate issuing CA: the LSC's issuer must be the intermediate's subject
/// (the reference wrote the intermediate's issuer), and the chain must verify to the root.
/// The intermediate's subject also exercises multi-valued RDNs, mixed string types and
/// OpenSSL's hash canonicalisation.
#[test]
fn intermediate_issuer_and_name_hash_against_openssl() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    let p = |name: &str| d.join(name).to_str().unwrap().to_string();
    let run = |args: &[&str]| {
        let (ok, out) = openssl(args);
        assert!(ok, "openssl {args:?}: {out}");
    };
    fs::write(
        d.join("ext.cnf"),
        "[ca]\nbasicConstraints=critical,CA:TRUE,pathlen:0\nkeyUsage=critical,keyCertSign,cRLSign,digitalSignature\n\
         [leaf]\nbasicConstraints=critical,CA:FALSE\n",
    )
    .unwrap();
    run(&[
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-days",
        "30",
        "-subj",
        "/CN=Test Root/O=Root Org",
        "-keyout",
        &p("root.key"),
        "-out",
        &p("root.pem"),
    ]);
    run(&[
        "req",
        "-new",
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:P-256",
        "-nodes",
        "-utf8",
        "-multivalue-rdn",
        "-subj",
        "/C=NZ/ST=  Otago   Region /O=Voice  Ltd+OU=TELEPHONY/CN=Issuing CA ÄÖ/L=Dunedin",
        "-keyout",
        &p("inter.key"),
        "-out",
        &p("inter.csr"),
    ]);
    run(&[
        "x509",
        "-req",
        "-in",
        &p("inter.csr"),
        "-CA",
        &p("root.pem"),
        "-CAkey",
        &p("root.key"),
        "-CAcreateserial",
        "-days",
        "30",
        "-extfile",
        &p("ext.cnf"),
        "-extensions",
        "ca",
        "-out",
        &p("inter.pem"),
    ]);
    fs::set_permissions(d.join("inter.key"), fs::Permissions::from_mode(0o600)).unwrap();
    fs::set_permissions(d.join("root.key"), fs::Permissions::from_mode(0o600)).unwrap();

    // The hash of a name with multi-valued RDNs, spaces, case and non-ASCII characters.
    let inter_der = pem_block(&d.join("inter.pem"), "CERTIFICATE").into_contents();
    let inter = Certificate::from_der(&inter_der).unwrap();
    let subject_der = inter.tbs_certificate.subject.to_der().unwrap();
    let ours = capf_pki::ca::name_hash::format_hash(capf_pki::ca::name_hash(&subject_der).unwrap());
    assert_eq!(ours, openssl_hash(&d.join("inter.pem")));
    let root_der = pem_block(&d.join("root.pem"), "CERTIFICATE").into_contents();
    let root = Certificate::from_der(&root_der).unwrap();
    let root_subject = root.tbs_certificate.subject.to_der().unwrap();
    assert_eq!(
        capf_pki::ca::name_hash::format_hash(capf_pki::ca::name_hash(&root_subject).unwrap()),
        openssl_hash(&d.join("root.pem"))
    );

    let issuer = load_issuer(&d.join("inter.pem"), &d.join("inter.key")).unwrap();
    let phone = PhoneKey::generate(KeySpec::Rsa(2048)).unwrap();
    let spki = phone.spki_der();
    let now = Utc::now();
    let lsc = issuer.issue_lsc("CSFJSMITH", &spki, 365, now).unwrap();
    let cert = check_lsc_profile(&lsc, &inter_der, "CSFJSMITH", &spki, now, 365);
    assert_eq!(cert.tbs_certificate.issuer, inter.tbs_certificate.subject);
    assert_ne!(cert.tbs_certificate.issuer, inter.tbs_certificate.issuer);
    assert_eq!(
        lsc.subject,
        // The multi-valued RDN comes in DER SET order (shorter encoding first), flattened.
        "CN=CSFJSMITH, C=NZ, ST=\\  Otago   Region\\ , OU=TELEPHONY, O=Voice  Ltd, L=Dunedin"
    );
    let lsc_path = write_lsc(d, &lsc);
    let (ok, out) = openssl(&[
        "verify",
        "-CAfile",
        &p("root.pem"),
        "-untrusted",
        &p("inter.pem"),
        lsc_path.to_str().unwrap(),
    ]);
    assert!(ok, "{out}");

    // Refusals: a key that does not match, a non-CA certificate, a readable key.
    assert!(matches!(
        load_issuer(&d.join("inter.pem"), &d.join("root.key")),
        Err(IdentityError::KeyMismatch { .. })
    ));
    run(&[
        "req",
        "-new",
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:P-256",
        "-nodes",
        "-subj",
        "/CN=leaf",
        "-keyout",
        &p("leaf.key"),
        "-out",
        &p("leaf.csr"),
    ]);
    run(&[
        "x509",
        "-req",
        "-in",
        &p("leaf.csr"),
        "-CA",
        &p("root.pem"),
        "-CAkey",
        &p("root.key"),
        "-CAcreateserial",
        "-days",
        "30",
        "-extfile",
        &p("ext.cnf"),
        "-extensions",
        "leaf",
        "-out",
        &p("leaf.pem"),
    ]);
    fs::set_permissions(d.join("leaf.key"), fs::Permissions::from_mode(0o600)).unwrap();
    assert!(matches!(
        load_issuer(&d.join("leaf.pem"), &d.join("leaf.key")),
        Err(IdentityError::NotCa { .. })
    ));
    fs::set_permissions(d.join("inter.key"), fs::Permissions::from_mode(0o644)).unwrap();
    assert!(matches!(
        load_issuer(&d.join("inter.pem"), &d.join("inter.key")),
        Err(IdentityError::InsecureKeyPermissions { .. })
    ));
}

/// Issuers are shared across tasks.
#[test]
fn issuer_is_send_and_sync() {
    fn assert_send_sync<T: Send + Sync>() {}
    assert_send_sync::<Issuer>();
    assert_send_sync::<CapfIdentity>();
}
