//! The certificates certificate authentication trusts: the LSC issuer(s) and the
//! manufacturer CAs that sign MICs and SUDIs.

use std::path::Path;

use super::chain::Cert;
use super::AuthError;

/// Parsed trust anchors. Immutable after construction, so it can be shared in an `Arc`.
#[derive(Debug)]
pub struct TrustAnchors {
    pub(crate) lsc_issuers: Vec<Cert>,
    /// Self-signed manufacturer certificates: where MIC and SUDI paths end.
    pub(crate) manufacturer_roots: Vec<Cert>,
    /// Other manufacturer certificates: usable inside a path, never trusted on their own.
    pub(crate) manufacturer_intermediates: Vec<Cert>,
}

impl TrustAnchors {
    /// LSC issuer certificate(s) (the CAPF/issuer cert) and manufacturer CA certificates
    /// (roots and intermediates) for MICs and SUDIs, all DER. A certificate that does not
    /// parse or has a key we cannot use is a configuration error.
    pub fn new(
        lsc_issuers: Vec<Vec<u8>>,
        manufacturer: Vec<Vec<u8>>,
    ) -> Result<TrustAnchors, AuthError> {
        let parse = |role: &str, index: usize, der: &[u8]| -> Result<Cert, AuthError> {
            let bad = |detail: String| AuthError::BadTrustAnchor {
                detail: format!("{role} certificate #{index}: {detail}"),
            };
            let cert = Cert::parse(der).map_err(|e| bad(e.0))?;
            if let Err(e) = &cert.key {
                return Err(bad(e.to_string()));
            }
            Ok(cert)
        };
        let lsc_issuers = lsc_issuers
            .iter()
            .enumerate()
            .map(|(i, der)| parse("LSC issuer", i, der))
            .collect::<Result<Vec<_>, _>>()?;
        let mut manufacturer_roots = Vec::new();
        let mut manufacturer_intermediates = Vec::new();
        for (i, der) in manufacturer.iter().enumerate() {
            let cert = parse("manufacturer", i, der)?;
            if cert.is_self_signed() {
                manufacturer_roots.push(cert);
            } else {
                manufacturer_intermediates.push(cert);
            }
        }
        Ok(TrustAnchors {
            lsc_issuers,
            manufacturer_roots,
            manufacturer_intermediates,
        })
    }

    /// Every `*.pem` in `dir` (each may hold several certificates), as DER in file-name
    /// order; a missing directory gives none. Files or certificates that cannot be used are
    /// left out and described in the returned warnings.
    pub fn load_manufacturer_dir(dir: &Path) -> (Vec<Vec<u8>>, Vec<String>) {
        let mut certs = Vec::new();
        let mut warnings = Vec::new();
        let entries = match std::fs::read_dir(dir) {
            Ok(entries) => entries,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return (certs, warnings),
            Err(e) => {
                warnings.push(format!("{}: cannot read directory: {e}", dir.display()));
                return (certs, warnings);
            }
        };
        let mut paths = Vec::new();
        for entry in entries {
            match entry {
                Ok(entry) => paths.push(entry.path()),
                Err(e) => warnings.push(format!("{}: {e}", dir.display())),
            }
        }
        paths.retain(|p| p.extension().is_some_and(|ext| ext == "pem") && p.is_file());
        paths.sort();
        for path in paths {
            let shown = path.display();
            let text = match std::fs::read(&path) {
                Ok(text) => text,
                Err(e) => {
                    warnings.push(format!("{shown}: {e}"));
                    continue;
                }
            };
            let blocks = match pem::parse_many(&text) {
                Ok(blocks) => blocks,
                Err(e) => {
                    warnings.push(format!("{shown}: not PEM: {e}"));
                    continue;
                }
            };
            let mut found = 0usize;
            for (n, block) in blocks.iter().enumerate() {
                if block.tag() != "CERTIFICATE" {
                    warnings.push(format!("{shown}: block {n} ({}) ignored", block.tag()));
                    continue;
                }
                match Cert::parse(block.contents()) {
                    Ok(cert) => match cert.key {
                        Ok(_) => {
                            found += 1;
                            certs.push(cert.der);
                        }
                        Err(e) => warnings.push(format!("{shown}: certificate {n}: {e}")),
                    },
                    Err(e) => warnings.push(format!("{shown}: certificate {n}: {e}")),
                }
            }
            if found == 0 && blocks.iter().all(|b| b.tag() != "CERTIFICATE") {
                warnings.push(format!("{shown}: no certificate found"));
            }
        }
        (certs, warnings)
    }

    pub fn lsc_issuer_count(&self) -> usize {
        self.lsc_issuers.len()
    }

    pub fn manufacturer_count(&self) -> usize {
        self.manufacturer_roots.len() + self.manufacturer_intermediates.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const CAPF: &str = include_str!("../../../../tests/vectors/certs/capf-cert.pem");
    const MIC_ROOT: &str = include_str!("../../../../tests/vectors/certs/mic-root.pem");
    const MIC: &str = include_str!("../../../../tests/vectors/certs/mic.pem");
    const MIC_ROOT_KEY: &str = include_str!("../../../../tests/vectors/certs/mic-root-key.pem");

    fn der(pem_text: &str) -> Vec<u8> {
        pem::parse_many(pem_text)
            .unwrap()
            .into_iter()
            .find(|b| b.tag() == "CERTIFICATE")
            .unwrap()
            .into_contents()
    }

    #[test]
    fn splits_roots_from_intermediates() {
        // mic.pem is not a CA, but that is for path checks to refuse; here it only has to
        // land among the non-self-signed certificates.
        let anchors = TrustAnchors::new(vec![der(CAPF)], vec![der(MIC_ROOT), der(MIC)]).unwrap();
        assert_eq!(anchors.lsc_issuer_count(), 1);
        assert_eq!(anchors.manufacturer_count(), 2);
        assert_eq!(anchors.manufacturer_roots.len(), 1);
        assert_eq!(anchors.manufacturer_roots[0].der, der(MIC_ROOT));
        assert_eq!(anchors.manufacturer_intermediates[0].der, der(MIC));
    }

    #[test]
    fn malformed_anchor_is_an_error() {
        let mut broken = der(CAPF);
        broken.truncate(100);
        let err = TrustAnchors::new(vec![broken], vec![]).unwrap_err();
        assert!(matches!(err, AuthError::BadTrustAnchor { .. }), "{err}");
        let err = TrustAnchors::new(vec![], vec![vec![]]).unwrap_err();
        assert!(matches!(err, AuthError::BadTrustAnchor { .. }), "{err}");
    }

    #[test]
    fn loads_pem_directory_with_warnings() {
        let dir = tempfile::tempdir().unwrap();
        // Two certificates in one file, plus a key block that must be reported, not loaded.
        let bundle = format!("{MIC_ROOT}{CAPF}");
        std::fs::write(dir.path().join("a-bundle.pem"), bundle).unwrap();
        std::fs::write(dir.path().join("b-key.pem"), MIC_ROOT_KEY).unwrap();
        std::fs::write(
            dir.path().join("c-garbage.pem"),
            "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n",
        )
        .unwrap();
        std::fs::write(dir.path().join("d-not-pem.txt"), "ignored").unwrap();
        let mic_only = pem::encode(&pem::Pem::new("CERTIFICATE", der(MIC)));
        std::fs::write(dir.path().join("e-mic.pem"), mic_only).unwrap();

        let (certs, warnings) = TrustAnchors::load_manufacturer_dir(dir.path());
        assert_eq!(certs, vec![der(MIC_ROOT), der(CAPF), der(MIC)]);
        assert_eq!(warnings.len(), 3, "{warnings:?}");
        assert!(warnings
            .iter()
            .any(|w| w.contains("b-key.pem") && w.contains("PRIVATE KEY")));
        assert!(warnings
            .iter()
            .any(|w| w.contains("b-key.pem") && w.contains("no certificate")));
        assert!(warnings.iter().any(|w| w.contains("c-garbage.pem")));
        // The loaded set is usable as is.
        TrustAnchors::new(vec![], certs).unwrap();
    }

    #[test]
    fn shareable_across_threads() {
        fn assert_send_sync<T: Send + Sync + 'static>() {}
        assert_send_sync::<TrustAnchors>();
        let anchors = std::sync::Arc::new(TrustAnchors::new(vec![der(CAPF)], vec![]).unwrap());
        let other = std::sync::Arc::clone(&anchors);
        let count = std::thread::spawn(move || other.lsc_issuer_count())
            .join()
            .unwrap();
        assert_eq!(count, 1);
    }

    #[test]
    fn missing_directory_is_empty() {
        let dir = tempfile::tempdir().unwrap();
        let (certs, warnings) = TrustAnchors::load_manufacturer_dir(&dir.path().join("absent"));
        assert!(certs.is_empty());
        assert!(warnings.is_empty());
    }
}
