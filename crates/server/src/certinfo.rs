//! Reading the facts capf records about a certificate (serial, names, validity, fingerprint).

use chrono::{DateTime, Utc};
use der::{Decode, Encode};
use sha2::{Digest, Sha256};
use x509_cert::time::Time;
use x509_cert::Certificate;

use capf_store::NewCertificate;

#[derive(Debug, thiserror::Error)]
pub enum CertInfoError {
    #[error("not a DER X.509 certificate: {0}")]
    Malformed(#[from] der::Error),
    #[error("not a DER X.509 certificate: non-canonical encoding")]
    NotCanonical,
    #[error("certificate validity out of range")]
    ValidityOutOfRange,
}

/// Describes a DER certificate for the store.
pub fn describe(der: &[u8]) -> Result<NewCertificate, CertInfoError> {
    let cert = Certificate::from_der(der)?;
    // Re-encoding must give the same bytes, or the fingerprint would describe something else.
    let again = cert.to_der()?;
    if again != der {
        return Err(CertInfoError::NotCanonical);
    }
    let tbs = &cert.tbs_certificate;
    Ok(NewCertificate {
        serial_hex: serial_hex(tbs.serial_number.as_bytes()),
        subject: tbs.subject.to_string(),
        issuer: tbs.issuer.to_string(),
        not_before: to_chrono(&tbs.validity.not_before)?,
        not_after: to_chrono(&tbs.validity.not_after)?,
        fingerprint_sha256: hex::encode(Sha256::digest(der)),
        pem: pem::encode(&pem::Pem::new("CERTIFICATE", der.to_vec())),
    })
}

/// Lower-case hex of the serial without leading zero bytes.
pub fn serial_hex(bytes: &[u8]) -> String {
    let trimmed: &[u8] = match bytes.iter().position(|b| *b != 0) {
        Some(i) => &bytes[i..],
        None => &[0],
    };
    hex::encode(trimmed)
}

fn to_chrono(t: &Time) -> Result<DateTime<Utc>, CertInfoError> {
    let secs = t.to_unix_duration().as_secs();
    i64::try_from(secs)
        .ok()
        .and_then(|s| DateTime::from_timestamp(s, 0))
        .ok_or(CertInfoError::ValidityOutOfRange)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn describes_a_vector_lsc() {
        let pem_text = std::fs::read_to_string(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../tests/vectors/device/01-SEP001122334455-rsa2048.pem"
        ))
        .unwrap();
        let der = pem::parse_many(&pem_text)
            .unwrap()
            .into_iter()
            .find(|p| p.tag() == "CERTIFICATE")
            .unwrap()
            .into_contents();
        let info = describe(&der).unwrap();
        assert_eq!(info.serial_hex, "50a2f327b79e8b9c4b6da1d911cc159e");
        assert!(
            info.subject.contains("CN=SEP001122334455"),
            "{}",
            info.subject
        );
        assert!(info.issuer.contains("CN=CAPF-test"), "{}", info.issuer);
        assert!(info.not_after > info.not_before);
        assert_eq!(info.fingerprint_sha256.len(), 64);
    }

    #[test]
    fn garbage_is_an_error() {
        assert!(describe(b"\x30\x03\x02\x01").is_err());
        assert!(describe(&[]).is_err());
    }

    #[test]
    fn serial_hex_trims_leading_zeros() {
        assert_eq!(serial_hex(&[0, 0x94, 0x17]), "9417");
        assert_eq!(serial_hex(&[0]), "00");
    }
}
