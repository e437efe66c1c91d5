//! Message layer: one typed view per command the server deals with (spec 2, 3).
//!
//! A typed view checks only the elements it interprets. Everything else (unknown tags, known
//! tags that mean nothing for that command) and the original element order live in [`Extra`],
//! so that `Message::from_frame(&f)?.to_frame(f.session_id) == f` for every well-formed frame.
//! Across all known tags (those spec 3.1 names), a repeated tag is rejected: no legitimate
//! sender repeats one, and two DEVICE_NAMEs or PASSWORDs would be ambiguous. Repeated unknown
//! tags are kept.
//!
//! Each message is declared once, with the tag and codec of each of its elements
//! (`typed_message!` in `codec`); the modules group them by flow, and `layout` holds the
//! elements that have an inner layout.

mod auth;
mod certificate;
mod codec;
mod keygen;
mod layout;
#[cfg(test)]
mod tests;

pub use auth::{AuthRequest, AuthResponse};
pub use certificate::{Empty, FetchCertificateResponse, ReasonOnly, StoreCertificateRequest};
pub use keygen::{KeyGenerateRequest, KeyGenerateResponse};
pub use layout::{CertificateElement, CertificateEntry, Sha2SignedData, SudiData};

use codec::{read, write};

use super::error::{DecodeError, EncodeError};
use super::frame::{Element, Frame};
use super::{Command, Tag};

/// What a typed view does not interpret: the other elements, in wire order, and the wire
/// order of all elements when it was not ascending. `Extra::default()` means "nothing extra,
/// ascending tag order", which is how the server should send (spec 1.7).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Extra {
    elements: Vec<Element>,
    /// Tags of every element in wire order; `None` when that order was ascending, so that a
    /// freshly built message and the same message decoded from its encoding compare equal.
    order: Option<Vec<Tag>>,
}

impl Extra {
    /// The elements the typed view did not interpret, in wire order.
    pub fn elements(&self) -> &[Element] {
        &self.elements
    }

    /// Tags that spec 3.1 does not define, in wire order (repeats included), so the session
    /// can log them.
    pub fn unknown_tags(&self) -> impl Iterator<Item = Tag> + '_ {
        self.elements
            .iter()
            .map(|element| element.tag)
            .filter(|t| !t.is_known())
    }

    /// Nothing extra and ascending order.
    pub fn is_empty(&self) -> bool {
        self.elements.is_empty() && self.order.is_none()
    }
}

/// Typed messages. Commands known only by number (5-8, 16, 18-23) and undefined ones (0,
/// above 23) stay raw in `Other`; the session treats them as unexpected.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Message {
    AuthRequest(AuthRequest),
    AuthResponse(AuthResponse),
    KeyGenerateRequest(KeyGenerateRequest),
    KeyGenerateResponse(KeyGenerateResponse),
    StoreCertificateRequest(StoreCertificateRequest),
    StoreCertificateResponse(ReasonOnly),
    FetchCertificateRequest(Empty),
    FetchCertificateResponse(FetchCertificateResponse),
    DeleteCertificateRequest(Empty),
    DeleteCertificateResponse(ReasonOnly),
    EndSession(ReasonOnly),
    RequestInProgress(Empty),
    Other(Frame),
}

impl Message {
    pub fn from_frame(frame: &Frame) -> Result<Message, DecodeError> {
        let elements = frame.elements.as_slice();
        Ok(match frame.command {
            Command::AuthRequest => Message::AuthRequest(read(elements)?),
            Command::AuthResponse => Message::AuthResponse(read(elements)?),
            Command::KeyGenerateRequest => Message::KeyGenerateRequest(read(elements)?),
            Command::KeyGenerateResponse => Message::KeyGenerateResponse(read(elements)?),
            Command::StoreCertificateRequest => Message::StoreCertificateRequest(read(elements)?),
            Command::StoreCertificateResponse => Message::StoreCertificateResponse(read(elements)?),
            Command::FetchCertificateRequest => Message::FetchCertificateRequest(read(elements)?),
            Command::FetchCertificateResponse => Message::FetchCertificateResponse(read(elements)?),
            Command::DeleteCertificateRequest => Message::DeleteCertificateRequest(read(elements)?),
            Command::DeleteCertificateResponse => {
                Message::DeleteCertificateResponse(read(elements)?)
            }
            Command::EndSession => Message::EndSession(read(elements)?),
            Command::RequestInProgress => Message::RequestInProgress(read(elements)?),
            _ => Message::Other(frame.clone()),
        })
    }

    /// The frame to send. Lengths are not checked here (values are plain vectors); `encode`
    /// or `Frame::encode` reports an element or body that does not fit.
    pub fn to_frame(&self, session_id: u32) -> Frame {
        let elements = match self {
            Message::AuthRequest(m) => write(m),
            Message::AuthResponse(m) => write(m),
            Message::KeyGenerateRequest(m) => write(m),
            Message::KeyGenerateResponse(m) => write(m),
            Message::StoreCertificateRequest(m) => write(m),
            Message::StoreCertificateResponse(m) => write(m),
            Message::FetchCertificateRequest(m) => write(m),
            Message::FetchCertificateResponse(m) => write(m),
            Message::DeleteCertificateRequest(m) => write(m),
            Message::DeleteCertificateResponse(m) => write(m),
            Message::EndSession(m) => write(m),
            Message::RequestInProgress(m) => write(m),
            Message::Other(frame) => frame.elements.clone(),
        };
        Frame {
            command: self.command(),
            session_id,
            elements,
        }
    }

    pub fn command(&self) -> Command {
        match self {
            Message::AuthRequest(_) => Command::AuthRequest,
            Message::AuthResponse(_) => Command::AuthResponse,
            Message::KeyGenerateRequest(_) => Command::KeyGenerateRequest,
            Message::KeyGenerateResponse(_) => Command::KeyGenerateResponse,
            Message::StoreCertificateRequest(_) => Command::StoreCertificateRequest,
            Message::StoreCertificateResponse(_) => Command::StoreCertificateResponse,
            Message::FetchCertificateRequest(_) => Command::FetchCertificateRequest,
            Message::FetchCertificateResponse(_) => Command::FetchCertificateResponse,
            Message::DeleteCertificateRequest(_) => Command::DeleteCertificateRequest,
            Message::DeleteCertificateResponse(_) => Command::DeleteCertificateResponse,
            Message::EndSession(_) => Command::EndSession,
            Message::RequestInProgress(_) => Command::RequestInProgress,
            Message::Other(frame) => frame.command,
        }
    }

    pub fn name(&self) -> &'static str {
        self.command().name()
    }

    /// Decodes one whole frame and types it; returns the session id of its header too.
    pub fn decode(bytes: &[u8]) -> Result<(u32, Message), DecodeError> {
        let frame = Frame::decode(bytes)?;
        let message = Message::from_frame(&frame)?;
        Ok((frame.session_id, message))
    }

    /// Header + body in one buffer, ready for a single write.
    pub fn encode(&self, session_id: u32) -> Result<Vec<u8>, EncodeError> {
        self.to_frame(session_id).encode()
    }
}
