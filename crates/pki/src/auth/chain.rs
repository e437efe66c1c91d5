//! Parsed certificates and issuer-path building from a leaf to a configured trust anchor.
//!
//! Names are compared as exact DER bytes, which is what every issuer we know of produces. The
//! search is depth-first, bounded in depth and in the number of signature checks, so a
//! hostile set of certificates cannot make it expensive.

use chrono::{DateTime, Duration, Utc};
use const_oid::db::rfc4519::CN;
use const_oid::db::rfc5280::{
    ANY_EXTENDED_KEY_USAGE, ID_CE_AUTHORITY_KEY_IDENTIFIER, ID_CE_BASIC_CONSTRAINTS,
    ID_CE_CERTIFICATE_POLICIES, ID_CE_EXT_KEY_USAGE, ID_CE_KEY_USAGE, ID_CE_NAME_CONSTRAINTS,
    ID_CE_SUBJECT_ALT_NAME, ID_CE_SUBJECT_KEY_IDENTIFIER, ID_KP_CLIENT_AUTH,
};
use const_oid::ObjectIdentifier;
use der::asn1::{AnyRef, BmpString, Ia5StringRef, PrintableStringRef, TeletexStringRef};
use der::{Decode, Encode, Reader, SliceReader, Tag, Tagged};
use sha2::{Digest, Sha256};
use x509_cert::ext::pkix::constraints::name::NameConstraints;
use x509_cert::ext::pkix::name::GeneralName;
use x509_cert::ext::pkix::{BasicConstraints, ExtendedKeyUsage, KeyUsage, SubjectAltName};
use x509_cert::name::Name;
use x509_cert::time::Time;
use x509_cert::Certificate;

use super::constraints::{Constraints, Names};
use super::signature::{KeyError, PublicKey};

/// Extensions whose meaning capf applies (or, for the identifiers and policies, that bind
/// nothing here: capf asks for no particular policy). Any other marked critical makes the
/// certificate unusable (RFC 5280 section 4.2).
const UNDERSTOOD_EXTENSIONS: [ObjectIdentifier; 8] = [
    ID_CE_BASIC_CONSTRAINTS,
    ID_CE_KEY_USAGE,
    ID_CE_EXT_KEY_USAGE,
    ID_CE_SUBJECT_ALT_NAME,
    ID_CE_NAME_CONSTRAINTS,
    ID_CE_CERTIFICATE_POLICIES,
    ID_CE_SUBJECT_KEY_IDENTIFIER,
    ID_CE_AUTHORITY_KEY_IDENTIFIER,
];

/// Longest accepted path: the leaf, up to four intermediates, and the anchor.
pub(super) const MAX_PATH_LEN: usize = 6;
/// Most certificate signatures one path search may check.
pub(super) const MAX_SIGNATURE_CHECKS: usize = 32;

/// A certificate that failed to parse, with a reason fit for logs.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub(crate) struct MalformedCert(pub String);

/// A parsed X.509 certificate with the fields authentication needs.
#[derive(Clone, Debug)]
pub(crate) struct Cert {
    pub der: Vec<u8>,
    /// The to-be-signed part exactly as received, so re-encoding can never change it.
    tbs: Vec<u8>,
    certificate: Certificate,
    signature: Vec<u8>,
    pub subject_der: Vec<u8>,
    pub issuer_der: Vec<u8>,
    pub subject: String,
    pub not_before: DateTime<Utc>,
    pub not_after: DateTime<Utc>,
    pub basic_constraints: Option<BasicConstraints>,
    pub key_usage: Option<KeyUsage>,
    pub ext_key_usage: Option<Vec<ObjectIdentifier>>,
    /// The names name constraints apply to.
    names: Names,
    name_constraints: Option<Constraints>,
    /// The first extension marked critical that capf does not understand.
    unknown_critical: Option<ObjectIdentifier>,
    pub common_names: Vec<String>,
    pub san_uris: Vec<String>,
    pub key: Result<PublicKey, KeyError>,
}

impl Cert {
    pub(crate) fn parse(der: &[u8]) -> Result<Cert, MalformedCert> {
        let bad = |what: &str, e: der::Error| MalformedCert(format!("{what}: {e}"));
        let tbs = raw_tbs(der).map_err(|e| bad("certificate structure", e))?;
        let certificate = Certificate::from_der(der).map_err(|e| bad("certificate", e))?;
        let tbs_cert = &certificate.tbs_certificate;
        if tbs_cert.signature != certificate.signature_algorithm {
            return Err(MalformedCert(
                "signature algorithm differs inside and outside the signed part".into(),
            ));
        }
        let signature = certificate
            .signature
            .as_bytes()
            .ok_or_else(|| MalformedCert("signature bit string has unused bits".into()))?
            .to_vec();
        let subject_der = tbs_cert.subject.to_der().map_err(|e| bad("subject", e))?;
        let issuer_der = tbs_cert.issuer.to_der().map_err(|e| bad("issuer", e))?;
        let not_before = to_chrono(tbs_cert.validity.not_before)?;
        let not_after = to_chrono(tbs_cert.validity.not_after)?;

        let mut basic_constraints = None;
        let mut key_usage = None;
        let mut ext_key_usage = None;
        let mut name_constraints = None;
        let mut unknown_critical = None;
        let mut names = Names::of_subject(&tbs_cert.subject);
        let mut san_uris = Vec::new();
        let mut seen = Vec::new();
        for ext in tbs_cert.extensions.iter().flatten() {
            if seen.contains(&ext.extn_id) {
                return Err(MalformedCert(format!(
                    "duplicate extension {}",
                    ext.extn_id
                )));
            }
            seen.push(ext.extn_id);
            let value = ext.extn_value.as_bytes();
            if ext.critical && !UNDERSTOOD_EXTENSIONS.contains(&ext.extn_id) {
                unknown_critical.get_or_insert(ext.extn_id);
            }
            if ext.extn_id == ID_CE_BASIC_CONSTRAINTS {
                basic_constraints = Some(
                    BasicConstraints::from_der(value).map_err(|e| bad("basic constraints", e))?,
                );
            } else if ext.extn_id == ID_CE_KEY_USAGE {
                key_usage = Some(KeyUsage::from_der(value).map_err(|e| bad("key usage", e))?);
            } else if ext.extn_id == ID_CE_EXT_KEY_USAGE {
                let eku =
                    ExtendedKeyUsage::from_der(value).map_err(|e| bad("extended key usage", e))?;
                ext_key_usage = Some(eku.0);
            } else if ext.extn_id == ID_CE_NAME_CONSTRAINTS {
                let nc =
                    NameConstraints::from_der(value).map_err(|e| bad("name constraints", e))?;
                name_constraints = Some(Constraints::new(&nc));
            } else if ext.extn_id == ID_CE_SUBJECT_ALT_NAME {
                let san =
                    SubjectAltName::from_der(value).map_err(|e| bad("subject alt name", e))?;
                for name in san.0 {
                    names.add(&name);
                    if let GeneralName::UniformResourceIdentifier(uri) = name {
                        san_uris.push(uri.to_string());
                    }
                }
            }
        }

        Ok(Cert {
            der: der.to_vec(),
            tbs,
            signature,
            subject_der,
            issuer_der,
            subject: tbs_cert.subject.to_string(),
            not_before,
            not_after,
            basic_constraints,
            key_usage,
            ext_key_usage,
            names,
            name_constraints,
            unknown_critical,
            common_names: common_names(&tbs_cert.subject)?,
            san_uris,
            key: PublicKey::from_spki(&tbs_cert.subject_public_key_info),
            certificate,
        })
    }

    /// Serial as lower-case hex of the unsigned integer without leading zero bytes (the form
    /// the store uses).
    pub(crate) fn serial_hex(&self) -> String {
        let bytes = self.certificate.tbs_certificate.serial_number.as_bytes();
        let first = bytes.iter().position(|b| *b != 0);
        match first.and_then(|i| bytes.get(i..)) {
            Some(rest) => hex::encode(rest),
            None => "0".into(),
        }
    }

    /// Lower-case hex SHA-256 of the DER.
    pub(crate) fn fingerprint_sha256(&self) -> String {
        hex::encode(Sha256::digest(&self.der))
    }

    /// Whether `issuer`'s key made this certificate's signature.
    pub(crate) fn is_signed_by(&self, issuer: &Cert) -> bool {
        match &issuer.key {
            Ok(key) => key.verify_x509(
                &self.certificate.signature_algorithm,
                &self.tbs,
                &self.signature,
            ),
            Err(_) => false,
        }
    }

    /// Self-issued and self-signed: a root.
    pub(crate) fn is_self_signed(&self) -> bool {
        self.subject_der == self.issuer_der && self.is_signed_by(self)
    }

    fn check_validity(&self, now: DateTime<Utc>, allowance: Duration) -> Result<(), ChainError> {
        if now < self.not_before {
            return Err(ChainError::NotYetValid {
                subject: self.subject.clone(),
            });
        }
        let deadline = self
            .not_after
            .checked_add_signed(allowance)
            .unwrap_or(DateTime::<Utc>::MAX_UTC);
        if now > deadline {
            return Err(ChainError::Expired {
                subject: self.subject.clone(),
            });
        }
        Ok(())
    }

    /// RFC 5280 section 4.2: an extension marked critical that is not understood makes the
    /// certificate unusable, wherever it sits on the path.
    fn check_critical(&self) -> Result<(), ChainError> {
        match &self.unknown_critical {
            None => Ok(()),
            Some(oid) => Err(ChainError::UnknownCriticalExtension {
                subject: self.subject.clone(),
                oid: oid.to_string(),
            }),
        }
    }

    /// What the phone's own certificate must allow: signing (it signs the AUTH_RESPONSE),
    /// and client authentication when it lists purposes at all.
    fn check_leaf(&self) -> Result<(), ChainError> {
        self.check_critical()?;
        let refused = |rule| ChainError::LeafUsage {
            subject: self.subject.clone(),
            rule,
        };
        if let Some(ku) = &self.key_usage {
            if !ku.digital_signature() {
                return Err(refused("key usage without digitalSignature"));
            }
        }
        if let Some(purposes) = &self.ext_key_usage {
            if !purposes
                .iter()
                .any(|p| *p == ID_KP_CLIENT_AUTH || *p == ANY_EXTENDED_KEY_USAGE)
            {
                return Err(refused("extended key usage without clientAuth"));
            }
        }
        Ok(())
    }

    /// This CA's name constraints over the certificates below it (`below`, the leaf first);
    /// a self-issued intermediate's subject is exempt (RFC 5280 section 4.2.1.10).
    fn check_names(&self, below: &[&Cert]) -> Result<(), ChainError> {
        let Some(constraints) = &self.name_constraints else {
            return Ok(());
        };
        for (i, cert) in below.iter().enumerate() {
            let self_issued = i > 0 && cert.subject_der == cert.issuer_der;
            if !constraints.allow(&cert.names, !self_issued) {
                return Err(ChainError::NameNotPermitted {
                    subject: cert.subject.clone(),
                    by: self.subject.clone(),
                });
            }
        }
        Ok(())
    }

    /// Checks for a certificate used as an issuer with `below` intermediates between it and
    /// the leaf.
    fn check_issuer(&self, below: usize) -> Result<(), ChainError> {
        self.check_critical()?;
        let subject = || self.subject.clone();
        let Some(bc) = self.basic_constraints.as_ref().filter(|bc| bc.ca) else {
            return Err(ChainError::NotACa { subject: subject() });
        };
        if let Some(limit) = bc.path_len_constraint {
            if below > usize::from(limit) {
                return Err(ChainError::PathLenExceeded { subject: subject() });
            }
        }
        if let Some(ku) = &self.key_usage {
            if !ku.key_cert_sign() {
                return Err(ChainError::BadKeyUsage { subject: subject() });
            }
        }
        Ok(())
    }
}

/// The to-be-signed SEQUENCE of a certificate, header included, as the raw input bytes.
fn raw_tbs(der: &[u8]) -> der::Result<Vec<u8>> {
    let outer = AnyRef::from_der(der)?;
    outer.tag().assert_eq(Tag::Sequence)?;
    let mut reader = SliceReader::new(outer.value())?;
    let tbs: AnyRef = reader.decode()?;
    tbs.tag().assert_eq(Tag::Sequence)?;
    // The parser enforces DER, so the re-encoded header has the original length.
    let len = usize::try_from(tbs.encoded_len()?)?;
    outer
        .value()
        .get(..len)
        .map(<[u8]>::to_vec)
        .ok_or_else(|| Tag::Sequence.value_error())
}

fn to_chrono(time: Time) -> Result<DateTime<Utc>, MalformedCert> {
    let secs = i64::try_from(time.to_unix_duration().as_secs())
        .map_err(|_| MalformedCert("validity date out of range".into()))?;
    DateTime::from_timestamp(secs, 0)
        .ok_or_else(|| MalformedCert("validity date out of range".into()))
}

/// Every CN attribute of `name`, decoded from the string types certificates use.
fn common_names(name: &Name) -> Result<Vec<String>, MalformedCert> {
    let mut out = Vec::new();
    for rdn in name.0.iter() {
        for atv in rdn.0.iter() {
            if atv.oid != CN {
                continue;
            }
            let bad = |e: der::Error| MalformedCert(format!("common name: {e}"));
            let value = &atv.value;
            let text = match value.tag() {
                Tag::Utf8String => String::from_utf8(value.value().to_vec())
                    .map_err(|_| MalformedCert("common name is not UTF-8".into()))?,
                Tag::PrintableString => value
                    .decode_as::<PrintableStringRef<'_>>()
                    .map_err(bad)?
                    .to_string(),
                Tag::Ia5String => value
                    .decode_as::<Ia5StringRef<'_>>()
                    .map_err(bad)?
                    .to_string(),
                Tag::TeletexString => value
                    .decode_as::<TeletexStringRef<'_>>()
                    .map_err(bad)?
                    .to_string(),
                Tag::BmpString => value.decode_as::<BmpString>().map_err(bad)?.to_string(),
                other => return Err(MalformedCert(format!("common name of type {other}"))),
            };
            out.push(text);
        }
    }
    Ok(out)
}

/// Why no acceptable path was found. `NoPath` means no candidate issuer even verified; the
/// others mean an issuer was found but a check on the path failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ChainError {
    #[error("no path to a trust anchor")]
    NoPath,
    #[error("certificate {subject:?} has expired")]
    Expired { subject: String },
    #[error("certificate {subject:?} is not yet valid")]
    NotYetValid { subject: String },
    #[error("issuer {subject:?} is not a CA (basic constraints)")]
    NotACa { subject: String },
    #[error("issuer {subject:?} may not sign certificates (key usage)")]
    BadKeyUsage { subject: String },
    #[error("issuer {subject:?} path length constraint exceeded")]
    PathLenExceeded { subject: String },
    #[error("certificate {subject:?} has a critical extension capf does not know ({oid})")]
    UnknownCriticalExtension { subject: String, oid: String },
    #[error("certificate {subject:?} has a name outside the name constraints of {by:?}")]
    NameNotPermitted { subject: String, by: String },
    #[error("certificate {subject:?} may not authenticate a phone: {rule}")]
    LeafUsage { subject: String, rule: &'static str },
}

impl ChainError {
    /// Short fixed text for audit logs.
    pub(crate) fn cause(&self) -> &'static str {
        match self {
            ChainError::NoPath => "untrusted certificate",
            ChainError::Expired { .. } => "certificate expired",
            ChainError::NotYetValid { .. } => "certificate not yet valid",
            ChainError::NotACa { .. } => "issuer is not a CA",
            ChainError::BadKeyUsage { .. } => "issuer may not sign certificates",
            ChainError::PathLenExceeded { .. } => "issuer path length exceeded",
            ChainError::UnknownCriticalExtension { .. } => "unknown critical extension",
            ChainError::NameNotPermitted { .. } => "name constraints violated",
            ChainError::LeafUsage { .. } => "certificate not for client authentication",
        }
    }
}

/// What a path search may use: anchors end a path, intermediates may sit inside it.
pub(super) struct PathSearch<'a> {
    pub anchors: &'a [&'a Cert],
    pub intermediates: &'a [&'a Cert],
    pub now: DateTime<Utc>,
    /// Added to every notAfter on the path (zero for LSC chains).
    pub allowance: Duration,
}

impl PathSearch<'_> {
    /// Finds a path from `leaf` to an anchor; returns the anchor reached.
    pub(super) fn run<'c>(&'c self, leaf: &'c Cert) -> Result<&'c Cert, ChainError> {
        let mut state = SearchState {
            budget: MAX_SIGNATURE_CHECKS,
            first_problem: None,
            path: vec![leaf],
        };
        match self.extend(&mut state) {
            // The leaf's own checks only matter once it is known to belong to this anchor set.
            Some(anchor) => leaf
                .check_leaf()
                .and_then(|()| leaf.check_validity(self.now, self.allowance))
                .map(|()| anchor),
            None => Err(state.first_problem.unwrap_or(ChainError::NoPath)),
        }
    }

    /// Depth-first step from the last certificate of `state.path`.
    fn extend<'c>(&'c self, state: &mut SearchState<'c>) -> Option<&'c Cert> {
        let current = *state.path.last()?;
        // Intermediates between the next issuer and the leaf.
        let below = state.path.len().checked_sub(1)?;

        for anchor in self.anchors.iter().copied() {
            match self.judge_issuer(state, current, anchor, below) {
                Judged::Accepted => return Some(anchor),
                Judged::Refused(problem) => {
                    state.first_problem.get_or_insert(problem);
                }
                Judged::NotTheIssuer => {}
            }
        }
        if state.path.len() + 1 >= MAX_PATH_LEN {
            return None;
        }
        for cert in self.intermediates.iter().copied() {
            if state.path.iter().any(|c| c.der == cert.der) {
                continue;
            }
            let refused = match self.judge_issuer(state, current, cert, below) {
                Judged::NotTheIssuer => continue,
                Judged::Accepted => None,
                Judged::Refused(problem) => Some(problem),
            };
            let depth = state.path.len();
            state.path.push(cert);
            let reached = self.extend(state);
            match (reached, refused) {
                (Some(anchor), None) => return Some(anchor),
                // A refused intermediate matters only on a path that reaches an anchor:
                // otherwise the certificate is simply not of this anchor set.
                (Some(_), Some(problem)) => {
                    state.first_problem.get_or_insert(problem);
                }
                (None, _) => {}
            }
            state.path.truncate(depth);
        }
        None
    }

    /// Whether `issuer` issued `child` and, if so, whether it passes the checks for its
    /// place on the path.
    fn judge_issuer(
        &self,
        state: &mut SearchState<'_>,
        child: &Cert,
        issuer: &Cert,
        below: usize,
    ) -> Judged {
        if issuer.subject_der != child.issuer_der || state.budget == 0 {
            return Judged::NotTheIssuer;
        }
        state.budget -= 1;
        if !child.is_signed_by(issuer) {
            return Judged::NotTheIssuer;
        }
        let checked = issuer
            .check_issuer(below)
            .and_then(|()| issuer.check_validity(self.now, self.allowance))
            .and_then(|()| issuer.check_names(&state.path));
        match checked {
            Ok(()) => Judged::Accepted,
            Err(problem) => Judged::Refused(problem),
        }
    }
}

enum Judged {
    NotTheIssuer,
    Accepted,
    Refused(ChainError),
}

struct SearchState<'c> {
    budget: usize,
    first_problem: Option<ChainError>,
    path: Vec<&'c Cert>,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vector_cert(pem_text: &str) -> Cert {
        let blocks = pem::parse_many(pem_text).unwrap();
        let cert = blocks.iter().find(|b| b.tag() == "CERTIFICATE").unwrap();
        Cert::parse(cert.contents()).unwrap()
    }

    fn capf() -> Cert {
        vector_cert(include_str!(
            "../../../../tests/vectors/certs/capf-cert.pem"
        ))
    }

    fn lsc() -> Cert {
        vector_cert(include_str!(
            "../../../../tests/vectors/device/02-SEP00112233AABB-p256.pem"
        ))
    }

    fn at(s: &str) -> DateTime<Utc> {
        s.parse().unwrap()
    }

    #[test]
    fn parses_vector_lsc_fields() {
        let c = lsc();
        assert_eq!(c.common_names, vec!["SEP00112233AABB".to_string()]);
        assert_eq!(c.san_uris, vec!["SEP00112233AABB".to_string()]);
        assert_eq!(c.serial_hex(), "94176d644f5d3d9e7cec0cab07b1518e");
        assert_eq!(c.issuer_der, capf().subject_der);
        assert!(matches!(c.key, Ok(PublicKey::P256(_))));
        assert_eq!(c.basic_constraints.as_ref().map(|b| b.ca), Some(false));
        assert!(c.subject.contains("CN=SEP00112233AABB"));
        assert_eq!(c.not_before, at("2026-11-21T23:01:45Z"));
    }

    #[test]
    fn self_signed_detection() {
        assert!(capf().is_self_signed());
        assert!(!lsc().is_self_signed());
        assert!(lsc().is_signed_by(&capf()));
        assert!(!capf().is_signed_by(&lsc()));
    }

    #[test]
    fn path_to_capf_and_dates() {
        let anchor = capf();
        let leaf = lsc();
        let anchors = [&anchor];
        let search = |now| PathSearch {
            anchors: &anchors,
            intermediates: &[],
            now,
            allowance: Duration::zero(),
        };
        let s = search(at("2027-01-01T00:00:00Z"));
        assert_eq!(s.run(&leaf).unwrap().der, anchor.der);
        let s = search(at("2028-01-01T00:00:00Z"));
        assert!(matches!(s.run(&leaf), Err(ChainError::Expired { .. })));
        let s = search(at("2026-11-21T00:00:00Z"));
        assert!(matches!(s.run(&leaf), Err(ChainError::NotYetValid { .. })));
        // The leaf cannot stand in for its own anchor.
        let anchors = [&leaf];
        let s = PathSearch {
            anchors: &anchors,
            intermediates: &[],
            now: at("2027-01-01T00:00:00Z"),
            allowance: Duration::zero(),
        };
        assert_eq!(s.run(&leaf).unwrap_err(), ChainError::NoPath);
    }

    #[test]
    fn garbage_is_malformed_not_a_panic() {
        let good = capf().der;
        for len in 0..good.len() {
            assert!(Cert::parse(good.get(..len).unwrap()).is_err());
        }
        let mut trailing = good.clone();
        trailing.push(0);
        assert!(Cert::parse(&trailing).is_err());
        assert!(Cert::parse(&[0x30, 0x84, 0xff, 0xff, 0xff, 0xff]).is_err());
    }
}
