//! Issuing LSCs (spec section 6) and the certificate plumbing shared with the CAPF identity.
//!
//! The TBSCertificate is assembled from DER pieces rather than through a certificate builder:
//! the profile needs the issuer name copied byte for byte, the subject built from the issuer's
//! attributes with their original string types, a fixed extension order and a SAN "URI" that
//! is a bare device name. Everything that does not depend on the request is encoded once, when
//! the [`Issuer`] is built, so issuing costs one signature plus some copying.

use std::fmt;
use std::sync::Arc;

use chrono::{DateTime, Datelike, Duration, TimeZone, Utc};
use rand::RngCore;
use sha2::{Digest, Sha256};

use super::cert_fields;
use super::der_io;
use super::name_hash::{self, NameError};
use super::pubkey;
use super::signer::{self, KeySigner, SignError, Signer};
use capf_model::device::{DeviceName, DeviceNameError};

/// Longest LSC validity an operation may ask for (five years).
pub const MAX_LSC_VALIDITY_DAYS: u32 = 1825;

/// Phones' clocks drift; a certificate that is not yet valid would be rejected.
const BACKDATE: Duration = Duration::minutes(5);

// OID content bytes.
const OID_CN: &[u8] = &[0x55, 0x04, 0x03];
/// Issuer attributes copied into the LSC subject: C, L, ST, O, OU.
const COPIED_ATTRIBUTES: [&[u8]; 5] = [
    &[0x55, 0x04, 0x06],
    &[0x55, 0x04, 0x07],
    &[0x55, 0x04, 0x08],
    &[0x55, 0x04, 0x0a],
    &[0x55, 0x04, 0x0b],
];
const OID_BASIC_CONSTRAINTS: &[u8] = &[0x55, 0x1d, 0x13];
const OID_KEY_USAGE: &[u8] = &[0x55, 0x1d, 0x0f];
const OID_SUBJECT_KEY_ID: &[u8] = &[0x55, 0x1d, 0x0e];
const OID_EXT_KEY_USAGE: &[u8] = &[0x55, 0x1d, 0x25];
const OID_SUBJECT_ALT_NAME: &[u8] = &[0x55, 0x1d, 0x11];
const OID_SERVER_AUTH: &[u8] = &[0x2b, 0x06, 0x01, 0x05, 0x05, 0x07, 0x03, 0x01];
const OID_CLIENT_AUTH: &[u8] = &[0x2b, 0x06, 0x01, 0x05, 0x05, 0x07, 0x03, 0x02];
const OID_IPSEC_END_SYSTEM: &[u8] = &[0x2b, 0x06, 0x01, 0x05, 0x05, 0x07, 0x03, 0x05];

/// `[0] EXPLICIT INTEGER 2` (v3).
const VERSION_V3: &[u8] = &[0xa0, 0x03, 0x02, 0x01, 0x02];

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IssueError {
    #[error("invalid device name for an LSC: {0}")]
    DeviceName(#[from] DeviceNameError),
    #[error("LSC validity of {0} days is outside 1..={MAX_LSC_VALIDITY_DAYS}")]
    Validity(u32),
    #[error("the phone's public key is not a DER SubjectPublicKeyInfo")]
    PublicKey,
    #[error("the phone's public key is one capf itself uses")]
    OwnKey,
    #[error("certificate validity dates out of range")]
    Time,
    #[error(transparent)]
    Sign(#[from] SignError),
}

/// A certificate issued to a phone.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IssuedLsc {
    pub der: Vec<u8>,
    pub pem: String,
    /// Lower-case hex of the serial's magnitude, no leading 00.
    pub serial_hex: String,
    pub subject: String,
    pub issuer: String,
    pub not_before: DateTime<Utc>,
    pub not_after: DateTime<Utc>,
    /// Lower-case hex of SHA-256 over the DER.
    pub fingerprint_sha256: String,
}

/// Signs LSCs. Cheap to clone; `Send + Sync`.
#[derive(Clone)]
pub struct Issuer {
    inner: Arc<IssuerInner>,
}

#[derive(Clone)]
struct IssuerInner {
    signer: Arc<dyn Signer>,
    /// Keys capf itself uses (this issuer's, and the CAPF identity's when they differ):
    /// never certified for a phone, whose LSC would then speak for capf.
    own_keys: Vec<Vec<u8>>,
    cert_der: Vec<u8>,
    /// The issuer certificate's subject, exact DER.
    name_der: Vec<u8>,
    name_string: String,
    /// The RDN SETs copied from the issuer's subject, encoded, to follow the device's CN.
    subject_tail_der: Vec<u8>,
    /// The same attributes in display form, starting with ", " (empty when there are none).
    subject_tail_string: String,
    /// BasicConstraints, KeyUsage and ExtendedKeyUsage, encoded (SAN follows per device).
    fixed_extensions: Vec<u8>,
}

impl fmt::Debug for Issuer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Issuer")
            .field("name", &self.inner.name_string)
            .field("signer", &self.inner.signer)
            .finish()
    }
}

impl Issuer {
    /// Builds an issuer from its certificate, that certificate's subject and its key.
    pub(crate) fn new(
        cert_der: Vec<u8>,
        subject_der: &[u8],
        signer: Arc<KeySigner>,
    ) -> Result<Issuer, NameError> {
        let name_string = name_hash::name_to_string(subject_der)?;
        let rdns = name_hash::parse_name(subject_der)?;
        let mut tail_der = Vec::new();
        let mut tail_string = String::new();
        // Multi-valued RDNs are flattened: each copied attribute becomes its own RDN.
        for attr in rdns.iter().flatten() {
            if !COPIED_ATTRIBUTES.contains(&attr.oid) {
                continue;
            }
            let mut atv = der_io::tlv(der_io::OID, attr.oid);
            atv.extend_from_slice(attr.value.raw);
            let atv = der_io::tlv(der_io::SEQUENCE, &atv);
            der_io::write(der_io::SET, &atv, &mut tail_der);
            let single = der_io::tlv(der_io::SEQUENCE, &der_io::tlv(der_io::SET, &atv));
            tail_string.push_str(", ");
            tail_string.push_str(&name_hash::name_to_string(&single)?);
        }
        let mut fixed = Vec::new();
        fixed.extend(extension(
            OID_BASIC_CONSTRAINTS,
            true,
            &der_io::tlv(der_io::SEQUENCE, &[]),
        ));
        // digitalSignature (bit 0) + keyEncipherment (bit 2): 5 unused bits.
        fixed.extend(extension(
            OID_KEY_USAGE,
            true,
            &der_io::tlv(der_io::BIT_STRING, &[0x05, 0xa0]),
        ));
        let purposes = [OID_SERVER_AUTH, OID_CLIENT_AUTH, OID_IPSEC_END_SYSTEM]
            .iter()
            .flat_map(|oid| der_io::tlv(der_io::OID, oid))
            .collect::<Vec<u8>>();
        fixed.extend(extension(
            OID_EXT_KEY_USAGE,
            false,
            &der_io::tlv(der_io::SEQUENCE, &purposes),
        ));
        let own_keys = pubkey::key_bits(signer.public_key_spki_der())
            .map(|bits| vec![bits.to_vec()])
            .unwrap_or_default();
        Ok(Issuer {
            inner: Arc::new(IssuerInner {
                own_keys,
                signer,
                cert_der,
                name_der: subject_der.to_vec(),
                name_string,
                subject_tail_der: tail_der,
                subject_tail_string: tail_string,
                fixed_extensions: fixed,
            }),
        })
    }

    /// This issuer, also refusing to certify the key of `spki_der` (the CAPF identity's,
    /// when a separate issuer signs LSCs).
    pub fn refusing_key(&self, spki_der: &[u8]) -> Issuer {
        let mut inner = IssuerInner::clone(&self.inner);
        if let Some(bits) = pubkey::key_bits(spki_der) {
            inner.own_keys.push(bits.to_vec());
        }
        Issuer {
            inner: Arc::new(inner),
        }
    }

    /// Whether `spki_der` holds a key capf itself uses.
    pub fn is_own_key(&self, spki_der: &[u8]) -> bool {
        pubkey::key_bits(spki_der)
            .is_some_and(|bits| self.inner.own_keys.iter().any(|own| own.as_slice() == bits))
    }

    /// The issuer certificate (DER).
    pub fn cert_der(&self) -> &[u8] {
        &self.inner.cert_der
    }

    /// Issues an LSC for `device_name` over the phone's public key `spki_der` (used unchanged).
    pub fn issue_lsc(
        &self,
        device_name: &str,
        spki_der: &[u8],
        validity_days: u32,
        now: DateTime<Utc>,
    ) -> Result<IssuedLsc, IssueError> {
        let name = DeviceName::from_wire(device_name)?;
        let name = name.as_str().as_bytes();
        if !(1..=MAX_LSC_VALIDITY_DAYS).contains(&validity_days) {
            return Err(IssueError::Validity(validity_days));
        }
        check_spki_shape(spki_der).ok_or(IssueError::PublicKey)?;
        if self.is_own_key(spki_der) {
            return Err(IssueError::OwnKey);
        }
        let now = truncate_to_second(now).ok_or(IssueError::Time)?;
        let not_before = now.checked_sub_signed(BACKDATE).ok_or(IssueError::Time)?;
        let not_after = now
            .checked_add_signed(Duration::days(i64::from(validity_days)))
            .ok_or(IssueError::Time)?;
        let (serial_content, serial_hex) = random_serial();
        let inner = &self.inner;

        let mut subject = Vec::with_capacity(name.len() + inner.subject_tail_der.len() + 16);
        let cn = der_io::tlv(
            der_io::SEQUENCE,
            &attribute(OID_CN, der_io::UTF8_STRING, name),
        );
        der_io::write(der_io::SET, &cn, &mut subject);
        subject.extend_from_slice(&inner.subject_tail_der);

        let mut extensions = inner.fixed_extensions.clone();
        // SAN: one uniformResourceIdentifier ([6] IA5String) holding the bare device name.
        let san = der_io::tlv(der_io::SEQUENCE, &der_io::tlv(0x86, name));
        extensions.extend(extension(OID_SUBJECT_ALT_NAME, false, &san));

        let mut tbs = Vec::with_capacity(1024 + spki_der.len());
        tbs.extend_from_slice(VERSION_V3);
        der_io::write(der_io::INTEGER, &serial_content, &mut tbs);
        tbs.extend_from_slice(inner.signer.algorithm_der());
        tbs.extend_from_slice(&inner.name_der);
        tbs.extend(validity(not_before, not_after).ok_or(IssueError::Time)?);
        der_io::write(der_io::SEQUENCE, &subject, &mut tbs);
        tbs.extend_from_slice(spki_der);
        der_io::write(0xa3, &der_io::tlv(der_io::SEQUENCE, &extensions), &mut tbs);
        let der = sign_certificate(inner.signer.as_ref(), &tbs)?;

        let mut subject_string = String::with_capacity(64);
        subject_string.push_str("CN=");
        subject_string.push_str(device_name);
        subject_string.push_str(&inner.subject_tail_string);
        Ok(IssuedLsc {
            pem: to_pem(&der),
            fingerprint_sha256: hex::encode(Sha256::digest(&der)),
            der,
            serial_hex,
            subject: subject_string,
            issuer: inner.name_string.clone(),
            not_before,
            not_after,
        })
    }
}

/// Why a certificate cannot issue certificates, if it cannot.
pub(crate) fn ca_problem(fields: &cert_fields::CertFields<'_>) -> Option<String> {
    let find = |oid: &[u8]| fields.extensions.iter().find(|(o, _, _)| *o == oid);
    let Some((_, _, bc)) = find(OID_BASIC_CONSTRAINTS) else {
        return Some("it has no BasicConstraints extension".into());
    };
    let is_ca = der_io::read_one_tagged(bc, der_io::SEQUENCE)
        .and_then(|seq| der_io::read_all(seq.value))
        .and_then(|parts| parts.first().copied())
        .is_some_and(|first| first.tag == der_io::BOOLEAN && first.value == [0xff]);
    if !is_ca {
        return Some("BasicConstraints does not say CA:TRUE".into());
    }
    if let Some((_, _, ku)) = find(OID_KEY_USAGE) {
        // keyCertSign is bit 5: mask 0x04 in the first byte after the unused-bits count.
        let cert_sign = der_io::read_one_tagged(ku, der_io::BIT_STRING)
            .and_then(|bits| bits.value.get(1).copied())
            .is_some_and(|b| b & 0x04 != 0);
        if !cert_sign {
            return Some("KeyUsage lacks keyCertSign".into());
        }
    }
    None
}

/// A SubjectPublicKeyInfo must at least be SEQUENCE { SEQUENCE {...}, BIT STRING }; the key
/// itself is checked by `pubkey::check_public_key` before issuance.
fn check_spki_shape(spki_der: &[u8]) -> Option<()> {
    let spki = der_io::read_one_tagged(spki_der, der_io::SEQUENCE)?;
    let parts = der_io::read_all(spki.value)?;
    match parts.as_slice() {
        [alg, key] if alg.tag == der_io::SEQUENCE && key.tag == der_io::BIT_STRING => Some(()),
        _ => None,
    }
}

fn truncate_to_second(t: DateTime<Utc>) -> Option<DateTime<Utc>> {
    Utc.timestamp_opt(t.timestamp(), 0).single()
}

/// Content octets of an AttributeTypeAndValue SEQUENCE.
fn attribute(oid: &[u8], tag: u8, value: &[u8]) -> Vec<u8> {
    let mut out = der_io::tlv(der_io::OID, oid);
    der_io::write(tag, value, &mut out);
    out
}

/// One Extension SEQUENCE; `value` is the DER that goes inside extnValue.
pub(crate) fn extension(oid: &[u8], critical: bool, value: &[u8]) -> Vec<u8> {
    let mut content = der_io::tlv(der_io::OID, oid);
    if critical {
        content.extend_from_slice(&[der_io::BOOLEAN, 0x01, 0xff]);
    }
    der_io::write(der_io::OCTET_STRING, value, &mut content);
    der_io::tlv(der_io::SEQUENCE, &content)
}

/// RFC 5280: UTCTime through 2049, GeneralizedTime from 2050.
pub(crate) fn encode_time(t: DateTime<Utc>) -> Option<Vec<u8>> {
    let year = t.year();
    if !(0..=9999).contains(&year) {
        return None;
    }
    if (1950..2050).contains(&year) {
        Some(der_io::tlv(
            der_io::UTC_TIME,
            t.format("%y%m%d%H%M%SZ").to_string().as_bytes(),
        ))
    } else {
        Some(der_io::tlv(
            der_io::GENERALIZED_TIME,
            t.format("%Y%m%d%H%M%SZ").to_string().as_bytes(),
        ))
    }
}

pub(crate) fn validity(not_before: DateTime<Utc>, not_after: DateTime<Utc>) -> Option<Vec<u8>> {
    let mut content = encode_time(not_before)?;
    content.extend(encode_time(not_after)?);
    Some(der_io::tlv(der_io::SEQUENCE, &content))
}

/// 16 random bytes as a positive INTEGER: (content octets, lower-case hex of the magnitude).
pub(crate) fn random_serial() -> (Vec<u8>, String) {
    let mut bytes = [0u8; 16];
    // A zero serial is not positive; retry (probability 2^-128).
    while bytes.iter().all(|b| *b == 0) {
        rand::rngs::OsRng.fill_bytes(&mut bytes);
    }
    let content = der_io::positive_integer_content(&bytes);
    let magnitude = content.strip_prefix(&[0]).unwrap_or(&content);
    (content.clone(), hex::encode(magnitude))
}

/// Signs a TBSCertificate (given as its content octets) and returns the Certificate DER.
pub(crate) fn sign_certificate(
    signer: &dyn Signer,
    tbs_content: &[u8],
) -> Result<Vec<u8>, SignError> {
    let tbs = der_io::tlv(der_io::SEQUENCE, tbs_content);
    let signature = signer.sign(&tbs)?;
    let alg = signer.algorithm_der();
    let mut cert = Vec::with_capacity(tbs.len() + alg.len() + signature.len() + 16);
    cert.extend_from_slice(&tbs);
    cert.extend_from_slice(alg);
    cert.extend(signer::signature_bit_string(&signature));
    Ok(der_io::tlv(der_io::SEQUENCE, &cert))
}

/// Builds a self-signed CA certificate (the CAPF certificate): CA:TRUE pathlen 0, KeyUsage
/// digitalSignature, keyEncipherment, keyCertSign, cRLSign, and a SubjectKeyIdentifier.
pub(crate) fn build_self_signed_ca(
    signer: &dyn Signer,
    subject_der: &[u8],
    not_before: DateTime<Utc>,
    not_after: DateTime<Utc>,
) -> Result<Vec<u8>, IssueError> {
    let (serial, _) = random_serial();
    let spki = signer.public_key_spki_der();
    // RFC 5280 method 1: SHA-1 of the subjectPublicKey bits.
    let key_bits = der_io::read_one_tagged(spki, der_io::SEQUENCE)
        .and_then(|s| der_io::read_all(s.value))
        .and_then(|parts| parts.get(1).copied())
        .and_then(|bits| bits.value.get(1..))
        .ok_or(IssueError::PublicKey)?;
    let key_id = sha1::Sha1::digest(key_bits);

    let mut exts = extension(
        OID_BASIC_CONSTRAINTS,
        true,
        // CA TRUE, pathLenConstraint 0
        &der_io::tlv(der_io::SEQUENCE, &[0x01, 0x01, 0xff, 0x02, 0x01, 0x00]),
    );
    // digitalSignature (0), keyEncipherment (2), keyCertSign (5), cRLSign (6): 1 unused bit.
    exts.extend(extension(
        OID_KEY_USAGE,
        true,
        &der_io::tlv(der_io::BIT_STRING, &[0x01, 0xa6]),
    ));
    exts.extend(extension(
        OID_SUBJECT_KEY_ID,
        false,
        &der_io::tlv(der_io::OCTET_STRING, &key_id),
    ));

    let mut tbs = Vec::with_capacity(1024);
    tbs.extend_from_slice(VERSION_V3);
    der_io::write(der_io::INTEGER, &serial, &mut tbs);
    tbs.extend_from_slice(signer.algorithm_der());
    tbs.extend_from_slice(subject_der);
    tbs.extend(validity(not_before, not_after).ok_or(IssueError::Time)?);
    tbs.extend_from_slice(subject_der);
    tbs.extend_from_slice(spki);
    der_io::write(0xa3, &der_io::tlv(der_io::SEQUENCE, &exts), &mut tbs);
    Ok(sign_certificate(signer, &tbs)?)
}

/// Builds a Name from (OID content bytes, string tag, value) attributes, one RDN each.
pub(crate) fn build_name(attributes: &[(&[u8], u8, &str)]) -> Vec<u8> {
    let mut content = Vec::new();
    for (oid, tag, value) in attributes {
        let atv = der_io::tlv(der_io::SEQUENCE, &attribute(oid, *tag, value.as_bytes()));
        der_io::write(der_io::SET, &atv, &mut content);
    }
    der_io::tlv(der_io::SEQUENCE, &content)
}

pub(crate) fn to_pem(der: &[u8]) -> String {
    pem::encode_config(
        &pem::Pem::new("CERTIFICATE", der.to_vec()),
        pem::EncodeConfig::new().set_line_ending(pem::LineEnding::LF),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ca::signer::GeneratedKey;

    fn test_issuer(kind: GeneratedKey, subject: &[(&[u8], u8, &str)]) -> Issuer {
        let signer = Arc::new(KeySigner::generate(kind).unwrap());
        let name = build_name(subject);
        let now = Utc::now();
        let cert =
            build_self_signed_ca(signer.as_ref(), &name, now, now + Duration::days(10)).unwrap();
        Issuer::new(cert, &name, signer).unwrap()
    }

    /// A key of a phone's: any key but the issuer's own.
    fn phone_spki() -> Vec<u8> {
        KeySigner::generate(GeneratedKey::EcP256)
            .unwrap()
            .public_key_spki_der()
            .to_vec()
    }

    /// Finding 13 of the hardening: a phone that returns the issuer's key, or the CAPF
    /// identity's, gets no certificate for it.
    #[test]
    fn keys_capf_uses_are_never_certified() {
        let issuer = test_issuer(GeneratedKey::EcP256, &[(OID_CN, der_io::UTF8_STRING, "CA")]);
        let own = issuer.inner.signer.public_key_spki_der().to_vec();
        let now = Utc::now();
        assert!(issuer.is_own_key(&own));
        assert_eq!(
            issuer.issue_lsc("SEP001122334455", &own, 365, now),
            Err(IssueError::OwnKey)
        );
        let capf = phone_spki();
        assert!(issuer.issue_lsc("SEP001122334455", &capf, 365, now).is_ok());
        let refusing = issuer.refusing_key(&capf);
        assert!(refusing.is_own_key(&capf) && refusing.is_own_key(&own));
        assert_eq!(
            refusing.issue_lsc("SEP001122334455", &capf, 365, now),
            Err(IssueError::OwnKey)
        );
        assert!(!refusing.is_own_key(&phone_spki()));
    }

    #[test]
    fn time_encoding_switches_at_2050() {
        let t = Utc.with_ymd_and_hms(2049, 12, 31, 23, 59, 59).unwrap();
        assert_eq!(
            encode_time(t).unwrap(),
            der_io::tlv(der_io::UTC_TIME, b"491231235959Z")
        );
        let t = Utc.with_ymd_and_hms(2050, 1, 1, 0, 0, 0).unwrap();
        assert_eq!(
            encode_time(t).unwrap(),
            der_io::tlv(der_io::GENERALIZED_TIME, b"20500101000000Z")
        );
    }

    #[test]
    fn serials_are_positive_and_minimal() {
        for _ in 0..200 {
            let (content, hex_text) = random_serial();
            assert!(content.len() <= 17);
            assert!(content[0] & 0x80 == 0, "negative serial");
            if content.len() > 1 {
                // Minimal: a leading 00 only when the next byte has its top bit set.
                assert!(content[0] != 0 || content[1] & 0x80 != 0);
            }
            assert!(!hex_text.starts_with("00"));
            let magnitude = content.strip_prefix(&[0]).unwrap_or(&content);
            assert_eq!(hex::decode(&hex_text).unwrap(), magnitude);
        }
    }

    #[test]
    fn rejects_bad_requests() {
        let issuer = test_issuer(GeneratedKey::EcP256, &[(OID_CN, der_io::UTF8_STRING, "CA")]);
        let spki = phone_spki();
        let now = Utc::now();
        assert_eq!(
            issuer.issue_lsc("SEP001122334455", &spki, 0, now),
            Err(IssueError::Validity(0))
        );
        assert_eq!(
            issuer.issue_lsc("SEP001122334455", &spki, 1826, now),
            Err(IssueError::Validity(1826))
        );
        assert!(matches!(
            issuer.issue_lsc("bad name!", &spki, 365, now),
            Err(IssueError::DeviceName(_))
        ));
        assert_eq!(
            issuer.issue_lsc("SEP001122334455", &spki[..spki.len() - 1], 365, now),
            Err(IssueError::PublicKey)
        );
        assert_eq!(
            issuer.issue_lsc("SEP001122334455", &[0x30, 0x00], 365, now),
            Err(IssueError::PublicKey)
        );
        assert!(issuer
            .issue_lsc("SEP001122334455", &spki, 1825, now)
            .is_ok());
    }

    #[test]
    fn issuer_without_copyable_attributes_gives_cn_only_subject() {
        let issuer = test_issuer(GeneratedKey::EcP256, &[(OID_CN, der_io::UTF8_STRING, "CA")]);
        let spki = phone_spki();
        let lsc = issuer
            .issue_lsc("CSFJSMITH", &spki, 30, Utc::now())
            .unwrap();
        assert_eq!(lsc.subject, "CN=CSFJSMITH");
        assert_eq!(lsc.issuer, "CN=CA");
    }
}
