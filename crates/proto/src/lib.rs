//! The CAPF wire protocol codec: bytes <-> raw frames <-> typed messages, with no I/O.
//!
//! Two layers, so that a reader can stop at the one it needs:
//! * [`Frame`] (module `frame`): the 8-byte header and the body as raw TLV elements, in wire
//!   order, unknown ones included. Only the framing itself is checked here.
//! * [`Message`] (module `message`): one typed struct per command the server deals with. Here
//!   the values of the elements a command uses are checked (fixed sizes, strings, nested
//!   layouts, size limits, duplicates); everything else is carried along untouched in
//!   [`Extra`] so that a decoded frame re-encodes byte for byte.
//!
//! Decoding is total: every byte string either decodes or yields a [`DecodeError`] whose
//! [`DecodeError::kind`] names the rule that was broken. Deciding whether a well-formed message
//! makes sense in a session (session id, required elements, command order, versions, device
//! names) is the session's job, not the codec's.
//!
//! Numbers and names follow sections 1-3 of the protocol description, `docs/protocol.md`
//! (code comments cite its sections as "spec N.N").

mod error;
mod frame;
mod message;
pub mod session;

pub use error::{DecodeError, EncodeError};
pub use frame::{Element, Frame, Header};
pub use message::{
    AuthRequest, AuthResponse, CertificateElement, CertificateEntry, Empty, Extra,
    FetchCertificateResponse, KeyGenerateRequest, KeyGenerateResponse, Message, ReasonOnly,
    Sha2SignedData, StoreCertificateRequest, SudiData,
};

/// First byte of every frame.
pub const PROTOCOL_ID: u8 = 0x55;
/// Size of the frame header: protocol id, command, session id (u32), body length (u16).
pub const HEADER_LEN: usize = 8;
/// Value of the VERSION element the server sends.
pub const PROTOCOL_VERSION: u8 = 3;
/// Largest body a header can announce.
pub const MAX_BODY_LEN: usize = u16::MAX as usize;

/// Command numbers (spec section 2).
pub mod command {
    pub const AUTH_REQUEST: u8 = 1;
    pub const AUTH_RESPONSE: u8 = 2;
    pub const KEY_GENERATE_REQUEST: u8 = 3;
    pub const KEY_GENERATE_RESPONSE: u8 = 4;
    pub const ENCRYPT_RESPONSE: u8 = 5;
    pub const ENCRYPT_REQUEST: u8 = 6;
    pub const DECRYPT_REQUEST: u8 = 7;
    pub const DECRYPT_RESPONSE: u8 = 8;
    pub const STORE_CERTIFICATE_REQUEST: u8 = 9;
    pub const STORE_CERTIFICATE_RESPONSE: u8 = 10;
    pub const FETCH_CERTIFICATE_REQUEST: u8 = 11;
    pub const FETCH_CERTIFICATE_RESPONSE: u8 = 12;
    pub const DELETE_CERTIFICATE_REQUEST: u8 = 13;
    pub const DELETE_CERTIFICATE_RESPONSE: u8 = 14;
    pub const END_SESSION: u8 = 15;
    pub const RETRY_LATER: u8 = 16;
    pub const REQUEST_IN_PROGRESS: u8 = 17;
    pub const STATUS_REQUEST: u8 = 18;
    pub const STATUS_RESPONSE: u8 = 19;
    pub const ABORT_REQUEST: u8 = 20;
    pub const ABORT_RESPONSE: u8 = 21;
    pub const SIGN_CERTIFICATE_REQUEST: u8 = 22;
    pub const SIGN_CERTIFICATE_RESPONSE: u8 = 23;

    /// Name of a command for logs; "UNKNOWN" for 0 and values above 23.
    pub fn name(cmd: u8) -> &'static str {
        match cmd {
            AUTH_REQUEST => "AUTH_REQUEST",
            AUTH_RESPONSE => "AUTH_RESPONSE",
            KEY_GENERATE_REQUEST => "KEY_GENERATE_REQUEST",
            KEY_GENERATE_RESPONSE => "KEY_GENERATE_RESPONSE",
            ENCRYPT_RESPONSE => "ENCRYPT_RESPONSE",
            ENCRYPT_REQUEST => "ENCRYPT_REQUEST",
            DECRYPT_REQUEST => "DECRYPT_REQUEST",
            DECRYPT_RESPONSE => "DECRYPT_RESPONSE",
            STORE_CERTIFICATE_REQUEST => "STORE_CERTIFICATE_REQUEST",
            STORE_CERTIFICATE_RESPONSE => "STORE_CERTIFICATE_RESPONSE",
            FETCH_CERTIFICATE_REQUEST => "FETCH_CERTIFICATE_REQUEST",
            FETCH_CERTIFICATE_RESPONSE => "FETCH_CERTIFICATE_RESPONSE",
            DELETE_CERTIFICATE_REQUEST => "DELETE_CERTIFICATE_REQUEST",
            DELETE_CERTIFICATE_RESPONSE => "DELETE_CERTIFICATE_RESPONSE",
            END_SESSION => "END_SESSION",
            RETRY_LATER => "RETRY_LATER",
            REQUEST_IN_PROGRESS => "REQUEST_IN_PROGRESS",
            STATUS_REQUEST => "STATUS_REQUEST",
            STATUS_RESPONSE => "STATUS_RESPONSE",
            ABORT_REQUEST => "ABORT_REQUEST",
            ABORT_RESPONSE => "ABORT_RESPONSE",
            SIGN_CERTIFICATE_REQUEST => "SIGN_CERTIFICATE_REQUEST",
            SIGN_CERTIFICATE_RESPONSE => "SIGN_CERTIFICATE_RESPONSE",
            _ => "UNKNOWN",
        }
    }
}

/// Element tags (spec 3.1). Tags without a name here (0, 14, 15, above 20) are "unknown":
/// skipped and kept verbatim by the decoder.
pub mod tag {
    pub const REASON: u8 = 1;
    pub const REASON_INFO: u8 = 2;
    pub const CERTIFICATE_TYPE: u8 = 3;
    pub const CERTIFICATE: u8 = 4;
    pub const CERTIFICATE_ID: u8 = 5;
    pub const SIGNED_DATA: u8 = 6;
    pub const VERSION: u8 = 7;
    pub const AUTH_TYPE: u8 = 8;
    pub const PUBLIC_KEY: u8 = 9;
    pub const KEY_SIZE: u8 = 10;
    pub const PASSWORD: u8 = 11;
    pub const RETRY_DELAY: u8 = 12;
    pub const DEVICE_NAME: u8 = 13;
    pub const SUDI_DATA: u8 = 16;
    pub const KEY_TYPE: u8 = 17;
    pub const CURVE: u8 = 18;
    pub const DIGEST_TYPE: u8 = 19;
    pub const SHA2_SIGNED_DATA: u8 = 20;

    /// Name of a tag for logs; "UNKNOWN" for tags spec 3.1 does not define.
    pub fn name(tag: u8) -> &'static str {
        match tag {
            REASON => "REASON",
            REASON_INFO => "REASON_INFO",
            CERTIFICATE_TYPE => "CERTIFICATE_TYPE",
            CERTIFICATE => "CERTIFICATE",
            CERTIFICATE_ID => "CERTIFICATE_ID",
            SIGNED_DATA => "SIGNED_DATA",
            VERSION => "VERSION",
            AUTH_TYPE => "AUTH_TYPE",
            PUBLIC_KEY => "PUBLIC_KEY",
            KEY_SIZE => "KEY_SIZE",
            PASSWORD => "PASSWORD",
            RETRY_DELAY => "RETRY_DELAY",
            DEVICE_NAME => "DEVICE_NAME",
            SUDI_DATA => "SUDI_DATA",
            KEY_TYPE => "KEY_TYPE",
            CURVE => "CURVE",
            DIGEST_TYPE => "DIGEST_TYPE",
            SHA2_SIGNED_DATA => "SHA2_SIGNED_DATA",
            _ => "UNKNOWN",
        }
    }

    /// Whether spec 3.1 defines the tag (even if its encoding is unknown).
    pub fn is_known(tag: u8) -> bool {
        name(tag) != "UNKNOWN"
    }
}

/// Reason codes (spec 3.2).
pub mod reason {
    pub const NO_ACTION: u8 = 0;
    pub const UPDATE_CERTIFICATE: u8 = 1;
    pub const INVALID_ELEMENT: u8 = 7;
    pub const UNKNOWN_DEVICE: u8 = 9;
}

/// Values of the AUTH_TYPE element (spec 3.3).
pub mod auth_type {
    pub const NONE: u8 = 0;
    pub const PASSWORD: u8 = 1;
    pub const NO_PASSWORD: u8 = 2;
    pub const LSC: u8 = 3;
    pub const MIC: u8 = 4;
}

/// Certificate types (spec 3.4): CERTIFICATE_TYPE element and certificate entries.
pub mod cert_type {
    pub const LSC: u8 = 1;
    pub const MIC: u8 = 2;
}

/// Values of the KEY_TYPE element (spec 3.4).
pub mod key_type {
    pub const RSA: u8 = 0;
    pub const EC: u8 = 1;
}

/// Hash ids (spec 3.4): SHA2_SIGNED_DATA and SUDI_DATA blocks.
pub mod hash_id {
    pub const SHA1: u8 = 1;
    pub const SHA256: u8 = 2;
    pub const SHA512: u8 = 3;
}
