//! Elements with an inner layout: CERTIFICATE (spec 3.5), SHA2_SIGNED_DATA (spec 3.6) and
//! SUDI_DATA (spec 3.7). Every byte is kept, so that each re-encodes exactly.

use super::codec::{check_len, Layout};
use crate::error::DecodeError;
use crate::{CertType, HashId, Tag};

// Receiver sanity limits per element value (spec 1.5).
pub(super) const MAX_CERTIFICATE: usize = 8 * 1024;
const MAX_SHA2_SIGNED_DATA: usize = 1024 + 3;
const MAX_SUDI_DATA: usize = 12 * 1024;

/// CERTIFICATE element (tag 4, spec 3.5): one or more entries
/// `marker(1) len16 reserved(1) type(1) DER`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CertificateElement {
    /// Never empty when decoded; the first entry is the one that counts.
    pub entries: Vec<CertificateEntry>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CertificateEntry {
    /// 0x01 in every observed entry (perhaps an index).
    pub marker: u8,
    /// 0x00 in every observed entry.
    pub reserved: u8,
    /// Not trustworthy from clients (spec 3.5).
    pub cert_type: CertType,
    pub der: Vec<u8>,
}

/// What `CertificateElement::first` returns for a hand-built element without entries, so that
/// the accessor stays total.
static NO_ENTRY: CertificateEntry = CertificateEntry {
    marker: 0,
    reserved: 0,
    cert_type: CertType::Unknown(0),
    der: Vec::new(),
};

impl CertificateElement {
    /// The layout every known sender uses: marker 1, reserved 0, one entry.
    pub fn single(cert_type: CertType, der: Vec<u8>) -> Self {
        CertificateElement {
            entries: vec![CertificateEntry {
                marker: 1,
                reserved: 0,
                cert_type,
                der,
            }],
        }
    }

    /// The first entry. A decoded element always has one; for a hand-built element without
    /// entries this is an entry with an empty DER.
    pub fn first(&self) -> &CertificateEntry {
        self.entries.first().unwrap_or(&NO_ENTRY)
    }
}

impl Layout for CertificateElement {
    fn decode(value: &[u8]) -> Result<Self, DecodeError> {
        check_len(Tag::Certificate, value, MAX_CERTIFICATE)?;
        let bad = |detail| DecodeError::BadCertificateEntry { detail };
        let mut entries = Vec::new();
        let mut rest = value;
        while !rest.is_empty() {
            let (marker, entry, after) = split_block(rest)
                .ok_or(bad("entry header or body runs past the end of the element"))?;
            let Some((&[reserved, cert_type], der)) = entry.split_first_chunk::<2>() else {
                return Err(bad("entry too short for its reserved and type bytes"));
            };
            if der.is_empty() {
                return Err(bad("entry holds no certificate"));
            }
            entries.push(CertificateEntry {
                marker,
                reserved,
                cert_type: CertType::from(cert_type),
                der: der.to_vec(),
            });
            rest = after;
        }
        Ok(CertificateElement { entries })
    }

    fn encode(&self) -> Vec<u8> {
        let mut out = Vec::new();
        for entry in &self.entries {
            out.push(entry.marker);
            out.extend_from_slice(&len16(entry.der.len().saturating_add(2)));
            out.push(entry.reserved);
            out.push(u8::from(entry.cert_type));
            out.extend_from_slice(&entry.der);
        }
        out
    }
}

/// SHA2_SIGNED_DATA element (tag 20, spec 3.6): hash id (2 or 3), u16 length, signature.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Sha2SignedData {
    pub hash_id: HashId,
    pub signature: Vec<u8>,
}

impl Layout for Sha2SignedData {
    fn decode(value: &[u8]) -> Result<Self, DecodeError> {
        check_len(Tag::Sha2SignedData, value, MAX_SHA2_SIGNED_DATA)?;
        let bad = |detail| DecodeError::BadSha2SignedData { detail };
        let Some((&[hash_id, l0, l1], signature)) = value.split_first_chunk::<3>() else {
            return Err(bad("shorter than its 3-byte header"));
        };
        let hash_id = HashId::from(hash_id);
        if !hash_id.is_sha2() {
            return Err(bad("hash id is neither 2 (SHA-256) nor 3 (SHA-512)"));
        }
        if usize::from(u16::from_be_bytes([l0, l1])) != signature.len() {
            return Err(bad("signature length does not match the element length"));
        }
        if signature.is_empty() {
            return Err(bad("empty signature"));
        }
        Ok(Sha2SignedData {
            hash_id,
            signature: signature.to_vec(),
        })
    }

    fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(3 + self.signature.len());
        out.push(u8::from(self.hash_id));
        out.extend_from_slice(&len16(self.signature.len()));
        out.extend_from_slice(&self.signature);
        out
    }
}

/// SUDI_DATA element (tag 16, spec 3.7): exactly three blocks `id len16 bytes` with ids 0
/// (certificate), 1 (SHA-1 signature) and 3 or 2 (SHA-2 signature), nothing after them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SudiData {
    pub certificate: Vec<u8>,
    pub sha1_signature: Vec<u8>,
    pub sha2_hash_id: HashId,
    pub sha2_signature: Vec<u8>,
}

/// Id of the first SUDI_DATA block; not a hash id, so not in [`HashId`].
const SUDI_CERTIFICATE_ID: u8 = 0;

impl Layout for SudiData {
    fn decode(value: &[u8]) -> Result<Self, DecodeError> {
        check_len(Tag::SudiData, value, MAX_SUDI_DATA)?;
        let bad = |detail| DecodeError::BadSudiData { detail };
        let mut blocks = [(0u8, &[][..]); 3];
        let mut rest = value;
        for block in &mut blocks {
            if rest.is_empty() {
                return Err(bad("fewer than three blocks"));
            }
            let (id, bytes, after) =
                split_block(rest).ok_or(bad("block header or body runs past the element"))?;
            if bytes.is_empty() {
                return Err(bad("empty block"));
            }
            *block = (id, bytes);
            rest = after;
        }
        if !rest.is_empty() {
            return Err(bad("bytes after the third block"));
        }
        let [(cert_id, certificate), (sha1_id, sha1_signature), (sha2_hash_id, sha2_signature)] =
            blocks;
        if cert_id != SUDI_CERTIFICATE_ID {
            return Err(bad("first block id is not 0 (certificate)"));
        }
        if HashId::from(sha1_id) != HashId::Sha1 {
            return Err(bad("second block id is not 1 (SHA-1)"));
        }
        let sha2_hash_id = HashId::from(sha2_hash_id);
        if !sha2_hash_id.is_sha2() {
            return Err(bad("third block id is neither 2 (SHA-256) nor 3 (SHA-512)"));
        }
        Ok(SudiData {
            certificate: certificate.to_vec(),
            sha1_signature: sha1_signature.to_vec(),
            sha2_hash_id,
            sha2_signature: sha2_signature.to_vec(),
        })
    }

    fn encode(&self) -> Vec<u8> {
        let mut out = Vec::new();
        for (id, bytes) in [
            (SUDI_CERTIFICATE_ID, &self.certificate),
            (u8::from(HashId::Sha1), &self.sha1_signature),
            (u8::from(self.sha2_hash_id), &self.sha2_signature),
        ] {
            out.push(id);
            out.extend_from_slice(&len16(bytes.len()));
            out.extend_from_slice(bytes);
        }
        out
    }
}

/// Splits `id len16 bytes` off the front; `None` if the header or the bytes run past the end.
fn split_block(bytes: &[u8]) -> Option<(u8, &[u8], &[u8])> {
    let (&[id, l0, l1], rest) = bytes.split_first_chunk::<3>()?;
    let (block, after) = rest.split_at_checked(usize::from(u16::from_be_bytes([l0, l1])))?;
    Some((id, block, after))
}

/// A length for a u16 field. An oversized value saturates here; the enclosing element is then
/// at least as long and `Frame::encode` rejects it, so the wrong length never goes out.
fn len16(len: usize) -> [u8; 2] {
    u16::try_from(len).unwrap_or(u16::MAX).to_be_bytes()
}
