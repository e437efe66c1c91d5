//! Typed codec errors.
//!
//! Messages name tags and sizes only, never element values: a PASSWORD value is a secret and
//! errors end up in logs.

use super::Tag;

/// Why a byte string is not a valid frame or message. [`DecodeError::kind`] gives a stable
/// short name for each rule (the names used by the malformed-frame test vectors).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DecodeError {
    #[error("protocol id 0x{found:02x} instead of 0x55")]
    ProtocolId { found: u8 },
    #[error("frame header truncated: {len} of 8 bytes")]
    TruncatedHeader { len: usize },
    #[error("frame truncated: header announces {announced} body bytes, only {available} present")]
    TruncatedFrame { announced: usize, available: usize },
    #[error("{extra} bytes after the {announced}-byte body the header announces")]
    TrailingBytes { announced: usize, extra: usize },
    #[error("element header truncated at body offset {offset}: {remaining} of 3 bytes")]
    TruncatedElementHeader { offset: usize, remaining: usize },
    #[error("{} element (tag {}) announces {len} bytes, only {available} left in the body", .tag.name(), u8::from(*.tag))]
    ElementOverrun {
        tag: Tag,
        len: usize,
        available: usize,
    },
    #[error("{} element (tag {}) is {len} bytes long, {expected} required", .tag.name(), u8::from(*.tag))]
    BadFixedLength {
        tag: Tag,
        len: usize,
        expected: usize,
    },
    #[error("{} element (tag {}) is empty", .tag.name(), u8::from(*.tag))]
    EmptyElement { tag: Tag },
    #[error("{} element (tag {}) is {len} bytes long, at most {max} accepted", .tag.name(), u8::from(*.tag))]
    ElementTooLong { tag: Tag, len: usize, max: usize },
    #[error("{} element (tag {}) does not end with a NUL", .tag.name(), u8::from(*.tag))]
    StringNotTerminated { tag: Tag },
    #[error("{} element (tag {}) has a NUL before its end", .tag.name(), u8::from(*.tag))]
    StringEmbeddedNul { tag: Tag },
    #[error("{} element (tag {}) is not printable ASCII", .tag.name(), u8::from(*.tag))]
    StringNotPrintable { tag: Tag },
    #[error("{} element (tag {}) appears more than once", .tag.name(), u8::from(*.tag))]
    DuplicateElement { tag: Tag },
    #[error("malformed CERTIFICATE element: {detail}")]
    BadCertificateEntry { detail: &'static str },
    #[error("malformed SHA2_SIGNED_DATA element: {detail}")]
    BadSha2SignedData { detail: &'static str },
    #[error("malformed SUDI_DATA element: {detail}")]
    BadSudiData { detail: &'static str },
}

impl DecodeError {
    /// Stable short name of the broken rule, for tests, metrics and logs.
    pub fn kind(&self) -> &'static str {
        match self {
            DecodeError::ProtocolId { .. } => "protocol-id",
            DecodeError::TruncatedHeader { .. } => "truncated-header",
            DecodeError::TruncatedFrame { .. } => "truncated-frame",
            DecodeError::TrailingBytes { .. } => "trailing-bytes",
            DecodeError::TruncatedElementHeader { .. } => "truncated-element-header",
            DecodeError::ElementOverrun { .. } => "element-overrun",
            DecodeError::BadFixedLength { .. } => "bad-fixed-length",
            DecodeError::EmptyElement { .. } => "empty-element",
            DecodeError::ElementTooLong { .. } => "element-too-long",
            DecodeError::StringNotTerminated { .. } => "string-not-terminated",
            DecodeError::StringEmbeddedNul { .. } => "string-embedded-nul",
            DecodeError::StringNotPrintable { .. } => "string-not-printable",
            DecodeError::DuplicateElement { .. } => "duplicate-element",
            DecodeError::BadCertificateEntry { .. } => "bad-certificate-entry",
            DecodeError::BadSha2SignedData { .. } => "bad-sha2-signed-data",
            DecodeError::BadSudiData { .. } => "bad-sudi-data",
        }
    }
}

/// Why a frame cannot be put on the wire: a length does not fit its u16 field.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum EncodeError {
    #[error("{} element (tag {}) is {len} bytes long, at most 65535 fit", .tag.name(), u8::from(*.tag))]
    ElementTooLong { tag: Tag, len: usize },
    #[error("frame body is {len} bytes long, at most 65535 fit")]
    BodyTooLong { len: usize },
}

impl EncodeError {
    /// Stable short name, like [`DecodeError::kind`].
    pub fn kind(&self) -> &'static str {
        match self {
            EncodeError::ElementTooLong { .. } => "element-too-long",
            EncodeError::BodyTooLong { .. } => "body-too-long",
        }
    }
}
