//! The opening exchange (spec 4.1): AUTH_REQUEST and AUTH_RESPONSE.

use std::fmt;

use super::codec::{typed_message, Byte, Bytes, Nested, Text};
use super::layout::{CertificateElement, Sha2SignedData, SudiData};
use super::Extra;
use crate::{AuthType, Reason, Tag};

// Receiver sanity limits per element value (spec 1.5).
pub(super) const MAX_DEVICE_NAME: usize = 16;
pub(super) const MAX_PASSWORD: usize = 17;
pub(super) const MAX_SIGNED_DATA: usize = 1024;

typed_message! {
    /// AUTH_REQUEST (1), server to phone.
    #[derive(Clone, Debug, Default, PartialEq, Eq)]
    pub struct AuthRequest {
        version: u8 = Tag::Version => Byte,
        auth_type: AuthType = Tag::AuthType => Byte,
    }
}

impl AuthRequest {
    pub fn new(version: u8, auth_type: AuthType) -> AuthRequest {
        AuthRequest {
            version: Some(version),
            auth_type: Some(auth_type),
            extra: Extra::default(),
        }
    }
}

typed_message! {
    /// AUTH_RESPONSE (2), phone to server.
    #[derive(Clone, Default, PartialEq, Eq)]
    pub struct AuthResponse {
        reason: Reason = Tag::Reason => Byte,
        version: u8 = Tag::Version => Byte,
        /// Without the NUL. On the wire: exactly one trailing NUL, none inside, printable
        /// ASCII.
        device_name: String = Tag::DeviceName => Text<MAX_DEVICE_NAME>,
        /// Without the NUL; "" for the single-NUL empty password.
        password: String = Tag::Password => Text<MAX_PASSWORD>,
        certificate: CertificateElement = Tag::Certificate => Nested,
        signed_data: Vec<u8> = Tag::SignedData => Bytes<MAX_SIGNED_DATA>,
        sha2_signed_data: Sha2SignedData = Tag::Sha2SignedData => Nested,
        sudi: SudiData = Tag::SudiData => Nested,
    }
}

// Manual so that the password never reaches a log.
impl fmt::Debug for AuthResponse {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AuthResponse")
            .field("reason", &self.reason)
            .field("version", &self.version)
            .field("device_name", &self.device_name)
            .field(
                "password",
                &self.password.as_ref().map(|_| format_args!("<redacted>")),
            )
            .field("certificate", &self.certificate)
            .field("signed_data", &self.signed_data)
            .field("sha2_signed_data", &self.sha2_signed_data)
            .field("sudi", &self.sudi)
            .field("extra", &self.extra)
            .finish()
    }
}
