//! Binding a certificate to the device name the phone claims (spec 5.4). The reference
//! server never checked this, so any phone's valid LSC authenticated as any device.

use super::chain::Cert;

/// An LSC names its device exactly: a single CN equal to the device name, and every SAN URI
/// (our LSCs carry one, the bare device name) equal to it too.
pub(super) fn lsc_matches(cert: &Cert, device_name: &str) -> bool {
    matches!(cert.common_names.as_slice(), [cn] if cn == device_name)
        && cert.san_uris.iter().all(|uri| uri == device_name)
}

/// A MIC's CN ends with the device name as a whole token, e.g. `CP-8845-SEP001122334455`
/// for `SEP001122334455` (the `<model>-<name>` form of Cisco MICs). Requiring the end, and a
/// non-alphanumeric character before it, stops both a name prefix (`SEP00112233445`) and
/// the model part (`CP-8845`) from matching.
pub(super) fn mic_matches(cert: &Cert, device_name: &str) -> bool {
    !device_name.is_empty()
        && cert
            .common_names
            .iter()
            .any(|cn| ends_with_token(cn, device_name))
}

fn ends_with_token(cn: &str, name: &str) -> bool {
    let Some(head) = cn.strip_suffix(name) else {
        return false;
    };
    head.chars()
        .next_back()
        .is_none_or(|c| !c.is_ascii_alphanumeric())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_rule() {
        assert!(ends_with_token(
            "CP-8845-SEP001122334455",
            "SEP001122334455"
        ));
        assert!(ends_with_token("SEP001122334455", "SEP001122334455"));
        assert!(ends_with_token(
            "CP 8845 SEP001122334455",
            "SEP001122334455"
        ));
        assert!(ends_with_token("é-SEP001", "SEP001"));
        assert!(!ends_with_token(
            "SEP001122334455 CP-8845",
            "SEP001122334455"
        ));
        assert!(!ends_with_token(
            "CP-8845-SEP001122334455",
            "SEP00112233445"
        ));
        assert!(!ends_with_token(
            "CP-8845-SEP001122334455",
            "EP001122334455"
        ));
        assert!(!ends_with_token("CP-8845-SEP001122334455", "CP-8845"));
        assert!(!ends_with_token(
            "CP-8845-SEP0011223344556",
            "SEP001122334455"
        ));
        assert!(!ends_with_token(
            "CP-8845-sep001122334455",
            "SEP001122334455"
        ));
        assert!(!ends_with_token("", "SEP001"));
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
            "../../../../tests/vectors/device/02-SEP00112233AABB-p256.pem"
        ));
        assert!(lsc_matches(&lsc, "SEP00112233AABB"));
        assert!(!lsc_matches(&lsc, "SEP00112233AABC"));
        assert!(!lsc_matches(&lsc, "SEP00112233aabb"));
        let mic = vector_cert(include_str!("../../../../tests/vectors/certs/mic.pem"));
        assert!(mic_matches(&mic, "SEP001122334455"));
        assert!(!mic_matches(&mic, "SEP001122334466"));
        assert!(!mic_matches(&mic, ""));
        // A MIC-style CN is not an exact LSC name.
        assert!(!lsc_matches(&mic, "SEP001122334455"));
    }
}
