//! The CAPF identity: the key and self-signed CA certificate the server presents on TLS and,
//! by default, signs LSCs with. Kept in `certs_dir` as:
//!
//! * `capf.key` — PKCS#8 PEM private key, mode 0600;
//! * `capf.pem` — the certificate (PEM);
//! * `capf.cer` — the certificate (DER), for upload to CUCM/phones' trust lists;
//! * `<hash>.0` — PEM copy named by OpenSSL's subject hash, so the directory works as an
//!   OpenSSL `-CApath`.
//!
//! The last two are derived and rewritten when missing or stale (best effort on load).

use std::fmt;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::Arc;

use chrono::{DateTime, Duration, Utc};
use rand::RngCore;

use super::cert_fields;
use super::der_io;
use super::lsc::{self, Issuer};
use super::name_hash;
use super::signer::{GeneratedKey, KeyError, KeySigner, SecretBytes, Signer};

pub(crate) const KEY_FILE: &str = "capf.key";
pub(crate) const CERT_FILE: &str = "capf.pem";
pub(crate) const DER_FILE: &str = "capf.cer";

/// Key type of a newly created CAPF identity.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum CapfKeyAlgorithm {
    /// The widest client support: phones' trust lists take RSA keys up to 2048 bits.
    #[default]
    Rsa2048,
    Rsa3072,
    Rsa4096,
    EcP256,
    EcP384,
}

impl CapfKeyAlgorithm {
    pub fn as_str(self) -> &'static str {
        match self {
            CapfKeyAlgorithm::Rsa2048 => "rsa-2048",
            CapfKeyAlgorithm::Rsa3072 => "rsa-3072",
            CapfKeyAlgorithm::Rsa4096 => "rsa-4096",
            CapfKeyAlgorithm::EcP256 => "ec-p256",
            CapfKeyAlgorithm::EcP384 => "ec-p384",
        }
    }

    fn generated(self) -> GeneratedKey {
        match self {
            CapfKeyAlgorithm::Rsa2048 => GeneratedKey::Rsa2048,
            CapfKeyAlgorithm::Rsa3072 => GeneratedKey::Rsa3072,
            CapfKeyAlgorithm::Rsa4096 => GeneratedKey::Rsa4096,
            CapfKeyAlgorithm::EcP256 => GeneratedKey::EcP256,
            CapfKeyAlgorithm::EcP384 => GeneratedKey::EcP384,
        }
    }
}

impl fmt::Display for CapfKeyAlgorithm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "unknown CAPF key algorithm {0:?}: expected rsa-2048, rsa-3072, rsa-4096, ec-p256 or ec-p384"
)]
pub struct CapfKeyAlgorithmParseError(pub String);

impl FromStr for CapfKeyAlgorithm {
    type Err = CapfKeyAlgorithmParseError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        [
            CapfKeyAlgorithm::Rsa2048,
            CapfKeyAlgorithm::Rsa3072,
            CapfKeyAlgorithm::Rsa4096,
            CapfKeyAlgorithm::EcP256,
            CapfKeyAlgorithm::EcP384,
        ]
        .into_iter()
        .find(|a| a.as_str() == s)
        .ok_or_else(|| CapfKeyAlgorithmParseError(s.to_string()))
    }
}

/// Optional subject attributes of the CAPF certificate (also copied into every LSC).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SubjectFields {
    pub organization: Option<String>,
    pub organizational_unit: Option<String>,
    pub locality: Option<String>,
    pub state: Option<String>,
    pub country: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IdentityOptions {
    pub key: CapfKeyAlgorithm,
    pub subject: SubjectFields,
    pub validity_days: u32,
}

impl Default for IdentityOptions {
    fn default() -> Self {
        IdentityOptions {
            key: CapfKeyAlgorithm::default(),
            subject: SubjectFields::default(),
            validity_days: 1825,
        }
    }
}

/// Whether `load_or_create` found the identity or made it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Loaded {
    Created,
    Existing,
}

#[derive(Debug, thiserror::Error)]
pub enum IdentityError {
    #[error("cannot read {path}: {source}")]
    Read { path: PathBuf, source: io::Error },
    #[error("cannot write {path}: {source}")]
    Write { path: PathBuf, source: io::Error },
    #[error("private key {path} is accessible by group or others (mode {mode:03o}); it must be 0600 or stricter (chmod 600)")]
    InsecureKeyPermissions { path: PathBuf, mode: u32 },
    #[error("private key {key_path} does not belong to the certificate {cert_path}")]
    KeyMismatch {
        key_path: PathBuf,
        cert_path: PathBuf,
    },
    #[error("incomplete CAPF identity: {present} exists but {missing} does not; restore the missing file, or remove both to create a new identity")]
    Incomplete { present: PathBuf, missing: PathBuf },
    #[error("cannot use private key {path}: {source}")]
    Key { path: PathBuf, source: KeyError },
    #[error("cannot use certificate {path}: {reason}")]
    Certificate { path: PathBuf, reason: String },
    #[error("certificate {path} cannot issue certificates: {reason}")]
    NotCa { path: PathBuf, reason: String },
    #[error("invalid CAPF subject {field}: {reason}")]
    Subject { field: &'static str, reason: String },
    #[error("CAPF certificate validity must be 1..=36500 days, not {0}")]
    Validity(u32),
    #[error("cannot create the CAPF identity's key: {0}")]
    GenerateKey(#[source] KeyError),
    #[error("cannot create the CAPF identity's certificate: {0}")]
    SelfSign(#[source] lsc::IssueError),
}

/// The CAPF key and certificate, loaded once and shared.
pub struct CapfIdentity {
    cert_der: Vec<u8>,
    cert_pem: String,
    key_pkcs8: SecretBytes,
    signer: Arc<KeySigner>,
    subject_hash: String,
    subject_string: String,
    not_after: DateTime<Utc>,
    issuer: Issuer,
}

impl fmt::Debug for CapfIdentity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CapfIdentity")
            .field("subject", &self.subject_string)
            .field("subject_hash", &self.subject_hash)
            .field("not_after", &self.not_after)
            .field("key", &self.signer)
            .finish()
    }
}

impl CapfIdentity {
    /// Loads capf.key + capf.pem from `certs_dir`, or creates them when BOTH are missing.
    pub fn load_or_create(
        certs_dir: &Path,
        opts: &IdentityOptions,
    ) -> Result<(CapfIdentity, Loaded), IdentityError> {
        let key_path = certs_dir.join(KEY_FILE);
        let cert_path = certs_dir.join(CERT_FILE);
        let key_exists = exists(&key_path)?;
        let cert_exists = exists(&cert_path)?;
        match (key_exists, cert_exists) {
            (true, true) => Ok((load(certs_dir, &key_path, &cert_path)?, Loaded::Existing)),
            (false, false) => Ok((create(certs_dir, opts)?, Loaded::Created)),
            (true, false) => Err(IdentityError::Incomplete {
                present: key_path,
                missing: cert_path,
            }),
            (false, true) => Err(IdentityError::Incomplete {
                present: cert_path,
                missing: key_path,
            }),
        }
    }

    pub fn cert_der(&self) -> &[u8] {
        &self.cert_der
    }

    pub fn cert_pem(&self) -> &str {
        &self.cert_pem
    }

    /// OpenSSL subject hash, e.g. "1a2b3c4d" (as `openssl x509 -hash` prints it).
    pub fn subject_hash(&self) -> String {
        self.subject_hash.clone()
    }

    /// The private key as PKCS#8 DER, for rustls. Secret: never log it.
    pub fn key_pkcs8_der(&self) -> &[u8] {
        self.key_pkcs8.as_bytes()
    }

    pub fn signer(&self) -> Arc<dyn Signer> {
        self.signer.clone()
    }

    /// One-line subject for logs, e.g. "C=NZ, O=Example Voice Ltd, CN=CAPF-1a2b3c4d".
    pub fn subject_string(&self) -> String {
        self.subject_string.clone()
    }

    pub fn not_after(&self) -> DateTime<Utc> {
        self.not_after
    }

    /// The identity as the LSC issuer (the default, unless a separate issuing CA is configured).
    pub fn issuer(&self) -> &Issuer {
        &self.issuer
    }

    /// Builds the identity from a certificate and its (already matched) key.
    fn from_parts(
        cert_path: &Path,
        cert_der: Vec<u8>,
        signer: KeySigner,
    ) -> Result<CapfIdentity, IdentityError> {
        let bad_cert = |reason: String| IdentityError::Certificate {
            path: cert_path.to_path_buf(),
            reason,
        };
        let fields = cert_fields::parse(&cert_der)
            .ok_or_else(|| bad_cert("not an X.509 certificate".into()))?;
        let hash = name_hash::name_hash(fields.subject).map_err(|e| bad_cert(e.to_string()))?;
        let subject_string =
            name_hash::name_to_string(fields.subject).map_err(|e| bad_cert(e.to_string()))?;
        let not_after = fields.not_after;
        let subject = fields.subject.to_vec();
        let key_pkcs8 = signer.to_pkcs8_der().map_err(|source| IdentityError::Key {
            path: cert_path.with_file_name(KEY_FILE),
            source,
        })?;
        let signer = Arc::new(signer);
        let issuer = Issuer::new(cert_der.clone(), &subject, signer.clone())
            .map_err(|e| bad_cert(e.to_string()))?;
        Ok(CapfIdentity {
            cert_pem: lsc::to_pem(&cert_der),
            cert_der,
            key_pkcs8,
            signer,
            subject_hash: name_hash::format_hash(hash),
            subject_string,
            not_after,
            issuer,
        })
    }
}

fn exists(path: &Path) -> Result<bool, IdentityError> {
    path.try_exists().map_err(|source| IdentityError::Read {
        path: path.to_path_buf(),
        source,
    })
}

fn load(dir: &Path, key_path: &Path, cert_path: &Path) -> Result<CapfIdentity, IdentityError> {
    check_key_permissions(key_path)?;
    let signer = read_key(key_path)?;
    let cert_der = read_certificate(cert_path)?;
    let fields = cert_fields::parse(&cert_der).ok_or_else(|| IdentityError::Certificate {
        path: cert_path.to_path_buf(),
        reason: "not an X.509 certificate".into(),
    })?;
    if fields.spki != signer.public_key_spki_der() {
        return Err(IdentityError::KeyMismatch {
            key_path: key_path.to_path_buf(),
            cert_path: cert_path.to_path_buf(),
        });
    }
    let identity = CapfIdentity::from_parts(cert_path, cert_der, signer)?;
    // The derived files are a convenience for administrators; a read-only certs directory
    // (a mounted secret, say) must not stop the server.
    if let Err(e) = write_derived(dir, &identity) {
        tracing::warn!(error = %e, "cannot refresh capf.cer / <hash>.0");
    }
    Ok(identity)
}

fn create(dir: &Path, opts: &IdentityOptions) -> Result<CapfIdentity, IdentityError> {
    if !(1..=36500).contains(&opts.validity_days) {
        return Err(IdentityError::Validity(opts.validity_days));
    }
    let subject = subject_name(&opts.subject)?;
    let signer = KeySigner::generate(opts.key.generated()).map_err(IdentityError::GenerateKey)?;
    let now = Utc::now();
    let not_before = now - Duration::minutes(5);
    let not_after = now
        .checked_add_signed(Duration::days(i64::from(opts.validity_days)))
        .ok_or(IdentityError::Validity(opts.validity_days))?;
    let cert_der = lsc::build_self_signed_ca(&signer, &subject, not_before, not_after)
        .map_err(IdentityError::SelfSign)?;

    create_dir(dir)?;
    let key_path = dir.join(KEY_FILE);
    let cert_path = dir.join(CERT_FILE);
    let identity = CapfIdentity::from_parts(&cert_path, cert_der, signer)?;
    let key_pem = SecretPem::new("PRIVATE KEY", identity.key_pkcs8_der());
    write_atomic(&key_path, key_pem.0.as_bytes(), 0o600)?;
    write_atomic(&cert_path, identity.cert_pem.as_bytes(), 0o644)?;
    write_derived(dir, &identity)?;
    Ok(identity)
}

/// A PEM text holding a private key; wiped on drop.
struct SecretPem(String);

impl SecretPem {
    fn new(label: &str, der: &[u8]) -> SecretPem {
        SecretPem(pem::encode_config(
            &pem::Pem::new(label, der.to_vec()),
            pem::EncodeConfig::new().set_line_ending(pem::LineEnding::LF),
        ))
    }
}

impl Drop for SecretPem {
    fn drop(&mut self) {
        let taken = std::mem::take(&mut self.0);
        drop(SecretBytes::new(taken.into_bytes()));
    }
}

/// Subject of a new CAPF certificate: C, ST, L, O, OU (those set), then a random CN.
fn subject_name(fields: &SubjectFields) -> Result<Vec<u8>, IdentityError> {
    let mut attrs: Vec<(&[u8], u8, &str)> = Vec::new();
    if let Some(c) = fields.country.as_deref() {
        // RFC 5280: countryName is a two-letter PrintableString.
        if c.len() != 2 || !c.bytes().all(|b| b.is_ascii_alphabetic()) {
            return Err(IdentityError::Subject {
                field: "country",
                reason: "must be a two-letter ISO 3166 code".into(),
            });
        }
        attrs.push((&[0x55, 0x04, 0x06], der_io::PRINTABLE_STRING, c));
    }
    let text_fields: [(&'static str, &[u8], &Option<String>, usize); 4] = [
        ("state", &[0x55, 0x04, 0x08], &fields.state, 128),
        ("locality", &[0x55, 0x04, 0x07], &fields.locality, 128),
        (
            "organization",
            &[0x55, 0x04, 0x0a],
            &fields.organization,
            64,
        ),
        (
            "organizational_unit",
            &[0x55, 0x04, 0x0b],
            &fields.organizational_unit,
            64,
        ),
    ];
    for (field, oid, value, max) in text_fields {
        let Some(value) = value.as_deref() else {
            continue;
        };
        let chars = value.chars().count();
        if chars == 0 || chars > max || value.trim() != value || value.chars().any(char::is_control)
        {
            return Err(IdentityError::Subject {
                field,
                reason: format!(
                    "must be 1 to {max} characters without control characters or surrounding spaces"
                ),
            });
        }
        attrs.push((oid, der_io::UTF8_STRING, value));
    }
    let mut suffix = [0u8; 4];
    rand::rngs::OsRng.fill_bytes(&mut suffix);
    let cn = format!("CAPF-{}", hex::encode(suffix));
    attrs.push((&[0x55, 0x04, 0x03], der_io::UTF8_STRING, &cn));
    Ok(lsc::build_name(&attrs))
}

fn create_dir(dir: &Path) -> Result<(), IdentityError> {
    if exists(dir)? {
        return Ok(());
    }
    let mut builder = fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::DirBuilderExt;
        builder.mode(0o700);
    }
    builder.create(dir).map_err(|source| IdentityError::Write {
        path: dir.to_path_buf(),
        source,
    })
}

/// Writes capf.cer and `<hash>.0` unless they already hold the right bytes.
fn write_derived(dir: &Path, identity: &CapfIdentity) -> Result<(), IdentityError> {
    let der_path = dir.join(DER_FILE);
    let hash_path = dir.join(format!("{}.0", identity.subject_hash));
    for (path, bytes) in [
        (der_path, identity.cert_der.as_slice()),
        (hash_path, identity.cert_pem.as_bytes()),
    ] {
        let current = match fs::read(&path) {
            Ok(b) => Some(b),
            Err(e) if e.kind() == io::ErrorKind::NotFound => None,
            Err(source) => return Err(IdentityError::Read { path, source }),
        };
        if current.as_deref() != Some(bytes) {
            write_atomic(&path, bytes, 0o644)?;
        }
    }
    Ok(())
}

/// Writes `bytes` to `path` so that a crash leaves either the old or the new file: a temporary
/// file in the same directory (created with `mode`, so a key is never briefly world-readable),
/// fsync, rename, fsync of the directory.
fn write_atomic(path: &Path, bytes: &[u8], mode: u32) -> Result<(), IdentityError> {
    crate::files::write_atomic(path, bytes, mode).map_err(|source| IdentityError::Write {
        path: path.to_path_buf(),
        source,
    })
}

/// A separate issuing CA (PEM certificate + PEM key). Refuses a key that does not match the
/// certificate, a certificate that is not a CA, and a key file readable by group/others.
pub fn load_issuer(cert_path: &Path, key_path: &Path) -> Result<Issuer, IdentityError> {
    check_key_permissions(key_path)?;
    let cert_der = read_certificate(cert_path)?;
    let bad_cert = |reason: &str| IdentityError::Certificate {
        path: cert_path.to_path_buf(),
        reason: reason.to_string(),
    };
    let fields =
        cert_fields::parse(&cert_der).ok_or_else(|| bad_cert("not an X.509 certificate"))?;
    if let Some(reason) = lsc::ca_problem(&fields) {
        return Err(IdentityError::NotCa {
            path: cert_path.to_path_buf(),
            reason,
        });
    }
    let signer = read_key(key_path)?;
    if signer.public_key_spki_der() != fields.spki {
        return Err(IdentityError::KeyMismatch {
            key_path: key_path.to_path_buf(),
            cert_path: cert_path.to_path_buf(),
        });
    }
    let subject = fields.subject.to_vec();
    Issuer::new(cert_der.clone(), &subject, Arc::new(signer)).map_err(|e| bad_cert(&e.to_string()))
}

/// Refuses a private key file that group or others may read or write.
pub fn check_key_permissions(path: &Path) -> Result<(), IdentityError> {
    let meta = fs::metadata(path).map_err(|source| IdentityError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = meta.permissions().mode() & 0o777;
        if mode & 0o077 != 0 {
            return Err(IdentityError::InsecureKeyPermissions {
                path: path.to_path_buf(),
                mode,
            });
        }
    }
    #[cfg(not(unix))]
    let _ = meta;
    Ok(())
}

/// Reads a PEM private key file into a signer.
pub(crate) fn read_key(path: &Path) -> Result<KeySigner, IdentityError> {
    let bytes = fs::read(path).map_err(|source| IdentityError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    let text = SecretPem(String::from_utf8_lossy(&bytes).into_owned());
    drop(SecretBytes::new(bytes));
    KeySigner::from_pem(&text.0).map_err(|source| IdentityError::Key {
        path: path.to_path_buf(),
        source,
    })
}

/// Reads the first CERTIFICATE block of a PEM file (or a DER file) and returns its DER.
pub(crate) fn read_certificate(path: &Path) -> Result<Vec<u8>, IdentityError> {
    let bytes = fs::read(path).map_err(|source| IdentityError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    if bytes.first() == Some(&der_io::SEQUENCE) {
        return Ok(bytes);
    }
    let text = String::from_utf8_lossy(&bytes);
    let blocks = pem::parse_many(text.as_bytes()).map_err(|e| IdentityError::Certificate {
        path: path.to_path_buf(),
        reason: format!("bad PEM: {e}"),
    })?;
    blocks
        .into_iter()
        .find(|b| b.tag() == "CERTIFICATE")
        .map(|b| b.into_contents())
        .ok_or_else(|| IdentityError::Certificate {
            path: path.to_path_buf(),
            reason: "no CERTIFICATE block".into(),
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn algorithm_names_round_trip() {
        for s in ["rsa-2048", "rsa-3072", "rsa-4096", "ec-p256", "ec-p384"] {
            assert_eq!(s.parse::<CapfKeyAlgorithm>().unwrap().to_string(), s);
        }
        assert!("rsa-1024".parse::<CapfKeyAlgorithm>().is_err());
        assert_eq!(CapfKeyAlgorithm::default(), CapfKeyAlgorithm::Rsa2048);
        assert_eq!(IdentityOptions::default().validity_days, 1825);
    }

    #[test]
    fn subject_validation() {
        let bad_country = SubjectFields {
            country: Some("NZL".into()),
            ..Default::default()
        };
        assert!(matches!(
            subject_name(&bad_country),
            Err(IdentityError::Subject {
                field: "country",
                ..
            })
        ));
        let bad_org = SubjectFields {
            organization: Some(" padded".into()),
            ..Default::default()
        };
        assert!(matches!(
            subject_name(&bad_org),
            Err(IdentityError::Subject {
                field: "organization",
                ..
            })
        ));
        let full = SubjectFields {
            organization: Some("Example Voice Ltd".into()),
            organizational_unit: Some("Telephony".into()),
            locality: Some("Wellington".into()),
            state: Some("Wellington".into()),
            country: Some("NZ".into()),
        };
        let name = subject_name(&full).unwrap();
        let text = name_hash::name_to_string(&name).unwrap();
        let prefix =
            "C=NZ, ST=Wellington, L=Wellington, O=Example Voice Ltd, OU=Telephony, CN=CAPF-";
        assert!(text.starts_with(prefix), "{text}");
        let suffix = &text[prefix.len()..];
        assert_eq!(suffix.len(), 8);
        assert!(suffix
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)));
    }
}
