//! The SUDI block (spec 5.5): the phone's manufacturer identity certificate signs the session
//! id, which makes this the only part of certificate authentication bound to the session.

use chrono::{DateTime, Duration, Utc};

use super::chain::{Cert, PathSearch};
use super::signature::{HashAlg, KeyError};
use super::trust::TrustAnchors;
use super::{AuthError, SudiBlock, WhichSignature};

/// Verifies `block` for `session_id`: RSA key only (anything else is refused, never
/// skipped), a path to a manufacturer root, and both signatures over
/// `session_id (u32 little-endian) || sudi_cert_der`.
pub(crate) fn verify_sudi(
    block: &SudiBlock<'_>,
    session_id: u32,
    anchors: &TrustAnchors,
    extra_chain: &[&Cert],
    allowance: Duration,
    now: DateTime<Utc>,
) -> Result<(), AuthError> {
    let malformed = |detail: String| AuthError::SudiMalformed { detail };
    if block.certificate.is_empty() {
        return Err(malformed("empty certificate".into()));
    }
    if block.sha1_signature.is_empty() || block.sha2_signature.is_empty() {
        return Err(malformed("empty signature".into()));
    }
    let sha2 = HashAlg::from_sha2_id(block.sha2_hash_id).ok_or(AuthError::UnsupportedHash {
        hash_id: block.sha2_hash_id,
    })?;
    let cert = Cert::parse(block.certificate).map_err(|e| malformed(e.0))?;
    let key = match &cert.key {
        Ok(key) if key.is_rsa() => key,
        Ok(_) | Err(KeyError::Algorithm(_) | KeyError::Curve(_)) => {
            return Err(AuthError::SudiNotRsa)
        }
        Err(e) => return Err(malformed(e.to_string())),
    };

    let mut intermediates: Vec<&Cert> = extra_chain.to_vec();
    intermediates.extend(anchors.manufacturer_intermediates.iter());
    let roots: Vec<&Cert> = anchors.manufacturer_roots.iter().collect();
    PathSearch {
        anchors: &roots,
        intermediates: &intermediates,
        now,
        allowance,
    }
    .run(&cert)
    .map_err(|problem| AuthError::SudiUntrusted { problem })?;

    // Cisco's server hashed the id as it lay in x86 memory; phones sign that form.
    let session = session_id.to_le_bytes();
    let message: [&[u8]; 2] = [&session, block.certificate];
    if !key.verify_capf(HashAlg::Sha1, &message, block.sha1_signature) {
        return Err(AuthError::SudiBadSignature {
            which: WhichSignature::Sha1,
        });
    }
    if !key.verify_capf(sha2, &message, block.sha2_signature) {
        return Err(AuthError::SudiBadSignature {
            which: WhichSignature::Sha2,
        });
    }
    Ok(())
}
