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
//! (code comments cite its sections as "spec N.N"); every number the protocol names is a
//! typed enum (module `enums`), open to values it does not name.

mod enums;
mod error;
mod frame;
mod message;
pub mod session;

pub use enums::{AuthType, CertType, Command, CurveId, HashId, KeyType, Reason, Tag};
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
