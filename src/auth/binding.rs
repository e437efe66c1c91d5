//! Binding a certificate to the device name the phone claims (spec 5.4). The reference
//! server never checked this, so any phone's valid LSC authenticated as any device.

use super::chain::Cert;

/// An LSC names its device exactly: a single CN equal to the device name, and every SAN URI
/// (our LSCs carry one, the bare device name) equal to it too.
pub fn lsc_matches(cert: &Cert, device_name: &str) -> bool {
    matches!(cert.common_names.as_slice(), [cn] if cn == device_name)
        && cert.san_uris.iter().all(|uri| uri == device_name)
}

/// A MIC's CN contains the device name as a whole token, e.g. `CP-8845-SEP001122334455`
/// for `SEP001122334455`. The token rule stops `SEP00112233445` (a prefix) from matching.
pub fn mic_matches(cert: &Cert, device_name: &str) -> bool {
    !device_name.is_empty()
        && cert
            .common_names
            .iter()
            .any(|cn| contains_token(cn, device_name))
}

/// Whether `needle` occurs in `haystack` with no ASCII letter or digit right before or after.
fn contains_token(haystack: &str, needle: &str) -> bool {
    let hay = haystack.as_bytes();
    let mut from = 0;
    while let Some(found) = haystack.get(from..).and_then(|rest| rest.find(needle)) {
        let start = from + found;
        let end = start + needle.len();
        let before_ok = start
            .checked_sub(1)
            .and_then(|i| hay.get(i))
            .is_none_or(|b| !b.is_ascii_alphanumeric());
        let after_ok = hay.get(end).is_none_or(|b| !b.is_ascii_alphanumeric());
        if before_ok && after_ok {
            return true;
        }
        // Advance by one character so overlapping occurrences are still found.
        let Some(next) = haystack.get(start..).and_then(|rest| rest.chars().next()) else {
            break;
        };
        from = start + next.len_utf8();
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_rule() {
        assert!(contains_token("CP-8845-SEP001122334455", "SEP001122334455"));
        assert!(contains_token("SEP001122334455", "SEP001122334455"));
        assert!(contains_token("SEP001122334455 CP-8845", "SEP001122334455"));
        assert!(!contains_token("CP-8845-SEP001122334455", "SEP00112233445"));
        assert!(!contains_token("CP-8845-SEP001122334455", "EP001122334455"));
        assert!(!contains_token(
            "CP-8845-SEP0011223344556",
            "SEP001122334455"
        ));
        assert!(!contains_token(
            "CP-8845-sep001122334455",
            "SEP001122334455"
        ));
        // A first occurrence that fails the rule does not hide a later one that passes.
        assert!(contains_token("XSEP001-SEP001", "SEP001"));
        assert!(contains_token("é-SEP001", "SEP001"));
        assert!(!contains_token("", "SEP001"));
    }

    fn vector_cert(pem_text: &str) -> Cert {
        let block = pem::parse_many(pem_text)
            .unwrap()
            .into_iter()
            .find(|b| b.tag() == "CERTIFICATE")
            .unwrap();
        Cert::parse(block.contents()).unwrap()
    }

    #[test]
    fn vector_certificates() {
        let lsc = vector_cert(include_str!(
            "../../tests/vectors/device/02-SEP00112233AABB-p256.pem"
        ));
        assert!(lsc_matches(&lsc, "SEP00112233AABB"));
        assert!(!lsc_matches(&lsc, "SEP00112233AABC"));
        assert!(!lsc_matches(&lsc, "SEP00112233aabb"));
        let mic = vector_cert(include_str!("../../tests/vectors/certs/mic.pem"));
        assert!(mic_matches(&mic, "SEP001122334455"));
        assert!(!mic_matches(&mic, "SEP001122334466"));
        assert!(!mic_matches(&mic, ""));
        // A MIC-style CN is not an exact LSC name.
        assert!(!lsc_matches(&mic, "SEP001122334455"));
    }
}
