//! Certificate authentication of phones ("By Existing Certificate", spec 5.4 and 5.5).
//!
//! A phone proves possession of its LSC or MIC by signing its device name and certificate,
//! optionally adding a SUDI signature over the session id. This module checks the
//! signatures, builds the certificate's path to a configured anchor (which also decides
//! whether it is an LSC or a MIC), binds it to the claimed device name and applies the
//! precedence policy. The one check left to the caller is whether an LSC is the one on
//! record for the device, which needs the database.
//!
//! Everything here is synchronous and CPU-bound; callers run it on a blocking pool.

mod binding;
mod chain;
mod constraints;
mod signature;
mod sudi;
mod trust;

use std::fmt;

use chrono::{DateTime, Duration, Utc};

pub use chain::ChainError;
pub use trust::TrustAnchors;

use chain::{Cert, PathSearch};
use signature::{HashAlg, KeyError};

/// Most further certificates a phone may send alongside its own.
pub const MAX_EXTRA_CHAIN: usize = 8;

/// What the phone presented (all DER / raw signature bytes).
#[derive(Clone, Copy, Debug)]
pub struct CertAuthRequest<'a> {
    /// Without the NUL; the signed message is name || 0x00 || cert_der.
    pub device_name: &'a str,
    /// Leaf certificate, DER.
    pub certificate: &'a [u8],
    /// Further certificates the phone sent (usually none).
    pub extra_chain: &'a [Vec<u8>],
    /// SIGNED_DATA: signature over SHA-1(M).
    pub signed_data: &'a [u8],
    /// SHA2_SIGNED_DATA hash id: 3 = SHA-512 (2 = SHA-256 also accepted).
    pub sha2_hash_id: u8,
    pub sha2_signature: &'a [u8],
    pub sudi: Option<SudiBlock<'a>>,
    /// Session id of the connection; the SUDI signature covers it.
    pub session_id: u32,
}

/// The three blocks of SUDI_DATA.
#[derive(Clone, Copy, Debug)]
pub struct SudiBlock<'a> {
    pub certificate: &'a [u8],
    pub sha1_signature: &'a [u8],
    pub sha2_hash_id: u8,
    pub sha2_signature: &'a [u8],
}

/// Which kind of certificate authenticated, decided by the anchor its path reaches.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum CertKind {
    Lsc,
    Mic,
}

impl CertKind {
    pub fn as_str(self) -> &'static str {
        match self {
            CertKind::Lsc => "LSC",
            CertKind::Mic => "MIC",
        }
    }
}

impl fmt::Display for CertKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The administrator's choice of certificate (CUCM "Precedence to LSC / MIC").
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Precedence {
    /// Accept an LSC, or a MIC only when the device has no LSC on record.
    Lsc,
    /// Accept only a MIC.
    Mic,
}

#[derive(Clone, Debug)]
pub struct AuthPolicy {
    pub precedence: Precedence,
    pub require_sudi: bool,
    /// Allowance for expired MIC/SUDI chains (e.g. old Cisco Manufacturing CA); LSC chains
    /// get none. Negative values count as zero.
    pub mic_expiry_allowance: Duration,
    /// Whether the device has an LSC on record (for Precedence::Lsc).
    pub device_has_lsc: bool,
}

/// A successful certificate authentication.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Verified {
    pub kind: CertKind,
    /// Lower-case hex SHA-256 of the leaf DER; for an LSC the caller checks it is on record.
    pub fingerprint_sha256: String,
    pub subject: String,
    /// Lower-case hex, no leading zero bytes (the store's form).
    pub serial_hex: String,
    pub sudi_verified: bool,
}

/// One of the two signatures of a pair.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WhichSignature {
    /// SIGNED_DATA or SUDI block 2.
    Sha1,
    /// SHA2_SIGNED_DATA or SUDI block 3.
    Sha2,
}

impl fmt::Display for WhichSignature {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            WhichSignature::Sha1 => "SHA-1",
            WhichSignature::Sha2 => "SHA-2",
        })
    }
}

/// Why certificate authentication failed. Messages name certificates by subject, never
/// anything secret.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum AuthError {
    #[error("missing element {element}")]
    MissingElement { element: &'static str },
    #[error("malformed certificate: {detail}")]
    MalformedCertificate { detail: String },
    #[error("unsupported {kind} key: {detail}")]
    UnsupportedKey { kind: CertKind, detail: String },
    #[error("unsupported hash id {hash_id}")]
    UnsupportedHash { hash_id: u8 },
    #[error("{kind} {which} signature does not verify")]
    BadSignature {
        kind: CertKind,
        which: WhichSignature,
    },
    #[error("certificate does not chain to a trusted issuer")]
    Untrusted {
        /// What the certificate claims to be by its issuer name, if that matches an anchor.
        presumed: Option<CertKind>,
    },
    #[error("{kind} chain: certificate {subject:?} has expired")]
    Expired { kind: CertKind, subject: String },
    #[error("{kind} chain: certificate {subject:?} is not yet valid")]
    NotYetValid { kind: CertKind, subject: String },
    #[error("{kind} chain: issuer {subject:?} is not a CA")]
    NotACa { kind: CertKind, subject: String },
    #[error("{kind} chain: issuer {subject:?} lacks keyCertSign")]
    BadKeyUsage { kind: CertKind, subject: String },
    #[error("{kind} chain: path length constraint of {subject:?} exceeded")]
    PathLenExceeded { kind: CertKind, subject: String },
    #[error("{kind} does not belong to the device")]
    WrongDevice { kind: CertKind },
    #[error("{kind} refused by policy: {reason}")]
    PolicyRefused {
        kind: CertKind,
        reason: &'static str,
    },
    #[error("SUDI required but not sent")]
    SudiRequired,
    #[error("malformed SUDI: {detail}")]
    SudiMalformed { detail: String },
    #[error("SUDI key is not RSA")]
    SudiNotRsa,
    #[error("SUDI {which} signature does not verify")]
    SudiBadSignature { which: WhichSignature },
    #[error("SUDI certificate not trusted: {problem}")]
    SudiUntrusted { problem: ChainError },
    #[error("unusable trust anchor: {detail}")]
    BadTrustAnchor { detail: String },
    /// The path breaks another rule of RFC 5280: an unknown critical extension, name
    /// constraints, or a leaf not meant for client authentication.
    #[error("{kind} refused: {problem}")]
    PathRefused { kind: CertKind, problem: ChainError },
}

impl AuthError {
    /// Short fixed text for audit logs.
    pub fn cause(&self) -> &'static str {
        match self {
            AuthError::MissingElement { .. } => "missing element",
            AuthError::MalformedCertificate { .. } => "malformed certificate",
            AuthError::UnsupportedKey { .. } => "unsupported key",
            AuthError::UnsupportedHash { .. } => "unsupported hash",
            AuthError::BadSignature {
                which: WhichSignature::Sha1,
                ..
            } => "bad SHA-1 signature",
            AuthError::BadSignature {
                which: WhichSignature::Sha2,
                ..
            } => "bad SHA-2 signature",
            AuthError::Untrusted { .. } => "untrusted certificate",
            AuthError::Expired { .. } => "certificate expired",
            AuthError::NotYetValid { .. } => "certificate not yet valid",
            AuthError::NotACa { .. } => "issuer is not a CA",
            AuthError::BadKeyUsage { .. } => "issuer may not sign certificates",
            AuthError::PathLenExceeded { .. } => "issuer path length exceeded",
            AuthError::WrongDevice { .. } => "certificate of another device",
            AuthError::PolicyRefused { reason, .. } => reason,
            AuthError::SudiRequired => "SUDI required",
            AuthError::SudiMalformed { .. } => "malformed SUDI",
            AuthError::SudiNotRsa => "SUDI key not RSA",
            AuthError::SudiBadSignature { .. } => "bad SUDI signature",
            AuthError::SudiUntrusted { .. } => "untrusted SUDI",
            AuthError::BadTrustAnchor { .. } => "bad trust anchor",
            AuthError::PathRefused { problem, .. } => problem.cause(),
        }
    }

    /// The kind of certificate the failure is about, when known; the caller maps LSC to
    /// CUCM's "Invalid LSC", MIC to "Invalid MIC" and `None` to "Invalid Credentials".
    pub fn cert_kind(&self) -> Option<CertKind> {
        match self {
            AuthError::UnsupportedKey { kind, .. }
            | AuthError::BadSignature { kind, .. }
            | AuthError::Expired { kind, .. }
            | AuthError::NotYetValid { kind, .. }
            | AuthError::NotACa { kind, .. }
            | AuthError::BadKeyUsage { kind, .. }
            | AuthError::PathLenExceeded { kind, .. }
            | AuthError::PathRefused { kind, .. }
            | AuthError::WrongDevice { kind }
            | AuthError::PolicyRefused { kind, .. } => Some(*kind),
            AuthError::Untrusted { presumed } => *presumed,
            _ => None,
        }
    }

    pub fn is_lsc_problem(&self) -> bool {
        self.cert_kind() == Some(CertKind::Lsc)
    }

    pub fn is_mic_problem(&self) -> bool {
        self.cert_kind() == Some(CertKind::Mic)
    }

    fn from_chain(kind: CertKind, problem: ChainError) -> AuthError {
        match problem {
            ChainError::NoPath => AuthError::Untrusted {
                presumed: Some(kind),
            },
            ChainError::Expired { subject } => AuthError::Expired { kind, subject },
            ChainError::NotYetValid { subject } => AuthError::NotYetValid { kind, subject },
            ChainError::NotACa { subject } => AuthError::NotACa { kind, subject },
            ChainError::BadKeyUsage { subject } => AuthError::BadKeyUsage { kind, subject },
            ChainError::PathLenExceeded { subject } => AuthError::PathLenExceeded { kind, subject },
            problem => AuthError::PathRefused { kind, problem },
        }
    }
}

/// Everything but the "is this LSC on record for this device" lookup, which the caller does
/// against its database with `Verified::fingerprint_sha256` when kind == Lsc.
pub fn verify_certificate_auth(
    req: &CertAuthRequest<'_>,
    anchors: &TrustAnchors,
    policy: &AuthPolicy,
    now: DateTime<Utc>,
) -> Result<Verified, AuthError> {
    for (element, value) in [
        ("CERTIFICATE", req.certificate),
        ("SIGNED_DATA", req.signed_data),
        ("SHA2_SIGNED_DATA", req.sha2_signature),
    ] {
        if value.is_empty() {
            return Err(AuthError::MissingElement { element });
        }
    }
    if policy.require_sudi && req.sudi.is_none() {
        return Err(AuthError::SudiRequired);
    }
    let sha2 = HashAlg::from_sha2_id(req.sha2_hash_id).ok_or(AuthError::UnsupportedHash {
        hash_id: req.sha2_hash_id,
    })?;
    if req.extra_chain.len() > MAX_EXTRA_CHAIN {
        return Err(AuthError::MalformedCertificate {
            detail: format!("more than {MAX_EXTRA_CHAIN} further certificates"),
        });
    }
    let malformed = |detail: String| AuthError::MalformedCertificate { detail };
    let leaf = Cert::parse(req.certificate).map_err(|e| malformed(e.0))?;
    let extra = req
        .extra_chain
        .iter()
        .map(|der| Cert::parse(der).map_err(|e| malformed(format!("further certificate: {e}"))))
        .collect::<Result<Vec<_>, _>>()?;
    let extra: Vec<&Cert> = extra.iter().collect();
    let allowance = policy.mic_expiry_allowance.max(Duration::zero());

    let kind = classify(&leaf, &extra, anchors, allowance, now)?;
    check_precedence(kind, policy)?;
    let bound = match kind {
        CertKind::Lsc => binding::lsc_matches(&leaf, req.device_name),
        CertKind::Mic => binding::mic_matches(&leaf, req.device_name),
    };
    if !bound {
        return Err(AuthError::WrongDevice { kind });
    }

    let key = leaf.key.as_ref().map_err(|e| match e {
        KeyError::Malformed(detail) => malformed(detail.clone()),
        other => AuthError::UnsupportedKey {
            kind,
            detail: other.to_string(),
        },
    })?;
    let message: [&[u8]; 3] = [req.device_name.as_bytes(), &[0], req.certificate];
    if !key.verify_capf(HashAlg::Sha1, &message, req.signed_data) {
        return Err(AuthError::BadSignature {
            kind,
            which: WhichSignature::Sha1,
        });
    }
    if !key.verify_capf(sha2, &message, req.sha2_signature) {
        return Err(AuthError::BadSignature {
            kind,
            which: WhichSignature::Sha2,
        });
    }

    let sudi_verified = match &req.sudi {
        Some(block) => {
            sudi::verify_sudi(block, req.session_id, anchors, &extra, allowance, now)?;
            true
        }
        None => false,
    };

    Ok(Verified {
        kind,
        fingerprint_sha256: leaf.fingerprint_sha256(),
        subject: leaf.subject.clone(),
        serial_hex: leaf.serial_hex(),
        sudi_verified,
    })
}

/// Finds which anchor set the leaf reaches. LSC paths may only use what the phone sent as
/// intermediates and get no expiry allowance; MIC paths may also use configured
/// manufacturer intermediates.
fn classify(
    leaf: &Cert,
    extra: &[&Cert],
    anchors: &TrustAnchors,
    allowance: Duration,
    now: DateTime<Utc>,
) -> Result<CertKind, AuthError> {
    let lsc_roots: Vec<&Cert> = anchors.lsc_issuers.iter().collect();
    let lsc = PathSearch {
        anchors: &lsc_roots,
        intermediates: extra,
        now,
        allowance: Duration::zero(),
    }
    .run(leaf)
    .map(|_| ());
    let Err(lsc_problem) = lsc else {
        return Ok(CertKind::Lsc);
    };

    let mic_roots: Vec<&Cert> = anchors.manufacturer_roots.iter().collect();
    let mut mic_intermediates: Vec<&Cert> = extra.to_vec();
    mic_intermediates.extend(anchors.manufacturer_intermediates.iter());
    let mic = PathSearch {
        anchors: &mic_roots,
        intermediates: &mic_intermediates,
        now,
        allowance,
    }
    .run(leaf)
    .map(|_| ());
    let Err(mic_problem) = mic else {
        return Ok(CertKind::Mic);
    };

    // Report the failure of the search that got furthest: one that found a real issuer.
    if lsc_problem != ChainError::NoPath {
        return Err(AuthError::from_chain(CertKind::Lsc, lsc_problem));
    }
    if mic_problem != ChainError::NoPath {
        return Err(AuthError::from_chain(CertKind::Mic, mic_problem));
    }
    let issued_by = |certs: &[Cert]| certs.iter().any(|c| c.subject_der == leaf.issuer_der);
    let presumed = if issued_by(&anchors.lsc_issuers) {
        Some(CertKind::Lsc)
    } else if issued_by(&anchors.manufacturer_roots)
        || issued_by(&anchors.manufacturer_intermediates)
    {
        Some(CertKind::Mic)
    } else {
        None
    };
    Err(AuthError::Untrusted { presumed })
}

fn check_precedence(kind: CertKind, policy: &AuthPolicy) -> Result<(), AuthError> {
    let refuse = |reason| Err(AuthError::PolicyRefused { kind, reason });
    match (policy.precedence, kind) {
        (Precedence::Mic, CertKind::Lsc) => refuse("MIC precedence: LSC not accepted"),
        (Precedence::Lsc, CertKind::Mic) if policy.device_has_lsc => {
            refuse("LSC precedence: device has an LSC, MIC not accepted")
        }
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn precedence_rules() {
        let policy = |precedence, device_has_lsc| AuthPolicy {
            precedence,
            require_sudi: false,
            mic_expiry_allowance: Duration::zero(),
            device_has_lsc,
        };
        assert!(check_precedence(CertKind::Lsc, &policy(Precedence::Lsc, true)).is_ok());
        assert!(check_precedence(CertKind::Lsc, &policy(Precedence::Lsc, false)).is_ok());
        assert!(check_precedence(CertKind::Mic, &policy(Precedence::Lsc, false)).is_ok());
        let err = check_precedence(CertKind::Mic, &policy(Precedence::Lsc, true)).unwrap_err();
        assert!(matches!(
            err,
            AuthError::PolicyRefused {
                kind: CertKind::Mic,
                ..
            }
        ));
        assert!(err.is_mic_problem());
        assert!(check_precedence(CertKind::Mic, &policy(Precedence::Mic, true)).is_ok());
        let err = check_precedence(CertKind::Lsc, &policy(Precedence::Mic, false)).unwrap_err();
        assert!(err.is_lsc_problem());
        assert_eq!(err.cause(), "MIC precedence: LSC not accepted");
    }

    #[test]
    fn error_kinds_for_cause_mapping() {
        let lsc = AuthError::Expired {
            kind: CertKind::Lsc,
            subject: "CN=x".into(),
        };
        assert!(lsc.is_lsc_problem() && !lsc.is_mic_problem());
        let unknown = AuthError::Untrusted { presumed: None };
        assert_eq!(unknown.cert_kind(), None);
        assert_eq!(AuthError::SudiNotRsa.cert_kind(), None);
        assert_eq!(
            AuthError::from_chain(CertKind::Mic, ChainError::NoPath),
            AuthError::Untrusted {
                presumed: Some(CertKind::Mic)
            }
        );
    }
}
