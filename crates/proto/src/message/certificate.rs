//! Store, fetch and delete (spec 4.2-4.4), and the messages that carry at most a REASON.

use super::codec::{typed_message, Byte, Nested};
use super::layout::CertificateElement;
use super::Extra;
use crate::{CertType, Reason, Tag};

typed_message! {
    /// STORE_CERTIFICATE_REQUEST (9), server to phone.
    #[derive(Clone, Debug, Default, PartialEq, Eq)]
    pub struct StoreCertificateRequest {
        certificate_type: CertType = Tag::CertificateType => Byte,
        certificate: CertificateElement = Tag::Certificate => Nested,
    }
}

impl StoreCertificateRequest {
    /// CERTIFICATE_TYPE and a single certificate entry, both carrying `cert_type`.
    pub fn new(cert_type: CertType, der: Vec<u8>) -> StoreCertificateRequest {
        StoreCertificateRequest {
            certificate_type: Some(cert_type),
            certificate: Some(CertificateElement::single(cert_type, der)),
            extra: Extra::default(),
        }
    }
}

typed_message! {
    /// FETCH_CERTIFICATE_RESPONSE (12), phone to server.
    #[derive(Clone, Debug, Default, PartialEq, Eq)]
    pub struct FetchCertificateResponse {
        reason: Reason = Tag::Reason => Byte,
        certificate: CertificateElement = Tag::Certificate => Nested,
    }
}

typed_message! {
    /// STORE_CERTIFICATE_RESPONSE (10), DELETE_CERTIFICATE_RESPONSE (14), END_SESSION (15).
    #[derive(Clone, Debug, Default, PartialEq, Eq)]
    pub struct ReasonOnly {
        reason: Reason = Tag::Reason => Byte,
    }
}

impl ReasonOnly {
    pub fn new(reason: Reason) -> ReasonOnly {
        ReasonOnly {
            reason: Some(reason),
            extra: Extra::default(),
        }
    }
}

typed_message! {
    /// FETCH_CERTIFICATE_REQUEST (11), DELETE_CERTIFICATE_REQUEST (13), REQUEST_IN_PROGRESS
    /// (17).
    #[derive(Clone, Debug, Default, PartialEq, Eq)]
    pub struct Empty {}
}
