//! Frame layer: the 8-byte header and the body as raw TLV elements (spec 1.2, 1.4).
//!
//! Only the framing is checked here; element values are opaque bytes.

use std::fmt;

use super::error::{DecodeError, EncodeError};
use super::{Command, Tag, HEADER_LEN, PROTOCOL_ID};

/// Size of an element header: tag (1) and value length (u16).
const ELEMENT_HEADER_LEN: usize = 3;

/// The fixed frame header, without the protocol id (which is always [`PROTOCOL_ID`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Header {
    pub command: Command,
    pub session_id: u32,
    pub body_len: u16,
}

impl Header {
    /// Checks the protocol id; any command number is accepted here.
    pub fn decode(bytes: &[u8; HEADER_LEN]) -> Result<Header, DecodeError> {
        let [id, command, s0, s1, s2, s3, l0, l1] = *bytes;
        if id != PROTOCOL_ID {
            return Err(DecodeError::ProtocolId { found: id });
        }
        Ok(Header {
            command: Command::from(command),
            session_id: u32::from_be_bytes([s0, s1, s2, s3]),
            body_len: u16::from_be_bytes([l0, l1]),
        })
    }

    pub fn encode(&self) -> [u8; HEADER_LEN] {
        let [s0, s1, s2, s3] = self.session_id.to_be_bytes();
        let [l0, l1] = self.body_len.to_be_bytes();
        [PROTOCOL_ID, u8::from(self.command), s0, s1, s2, s3, l0, l1]
    }
}

/// One TLV element with its raw value.
#[derive(Clone, PartialEq, Eq)]
pub struct Element {
    pub tag: Tag,
    pub value: Vec<u8>,
}

impl Element {
    pub fn new(tag: Tag, value: Vec<u8>) -> Element {
        Element { tag, value }
    }
}

// Manual so that a PASSWORD value never reaches a log through `{:?}` of a frame.
impl fmt::Debug for Element {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut s = f.debug_struct("Element");
        s.field(
            "tag",
            &format_args!("{} ({})", u8::from(self.tag), self.tag.name()),
        );
        if self.tag == Tag::Password {
            s.field(
                "value",
                &format_args!("<redacted, {} bytes>", self.value.len()),
            );
        } else {
            s.field("value", &format_args!("{}", hex::encode(&self.value)));
        }
        s.finish()
    }
}

/// A frame as raw TLVs, elements in wire order (unknown ones included).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Frame {
    pub command: Command,
    pub session_id: u32,
    pub elements: Vec<Element>,
}

impl Frame {
    /// Exactly one whole frame (header + body). Fewer bytes than announced: TruncatedFrame;
    /// more: TrailingBytes; fewer than 8: TruncatedHeader.
    pub fn decode(bytes: &[u8]) -> Result<Frame, DecodeError> {
        let (head, body) = match bytes.split_first_chunk::<HEADER_LEN>() {
            Some(split) => split,
            None => return Err(DecodeError::TruncatedHeader { len: bytes.len() }),
        };
        let header = Header::decode(head)?;
        Frame::decode_body(&header, body)
    }

    /// The body that followed an already decoded header (what a reader does after read_exact).
    pub fn decode_body(header: &Header, body: &[u8]) -> Result<Frame, DecodeError> {
        let announced = usize::from(header.body_len);
        if body.len() < announced {
            return Err(DecodeError::TruncatedFrame {
                announced,
                available: body.len(),
            });
        }
        if body.len() > announced {
            return Err(DecodeError::TrailingBytes {
                announced,
                extra: body.len() - announced,
            });
        }
        Ok(Frame {
            command: header.command,
            session_id: header.session_id,
            elements: decode_elements(body)?,
        })
    }

    /// Header + body in ONE buffer, because a frame must leave in a single write (spec 1.7).
    pub fn encode(&self) -> Result<Vec<u8>, EncodeError> {
        let mut body_len: usize = 0;
        for element in &self.elements {
            if element.value.len() > usize::from(u16::MAX) {
                return Err(EncodeError::ElementTooLong {
                    tag: element.tag,
                    len: element.value.len(),
                });
            }
            body_len = body_len.saturating_add(ELEMENT_HEADER_LEN + element.value.len());
        }
        let announced = match u16::try_from(body_len) {
            Ok(len) => len,
            Err(_) => return Err(EncodeError::BodyTooLong { len: body_len }),
        };
        let header = Header {
            command: self.command,
            session_id: self.session_id,
            body_len: announced,
        };
        let mut out = Vec::with_capacity(HEADER_LEN + body_len);
        out.extend_from_slice(&header.encode());
        for element in &self.elements {
            out.push(u8::from(element.tag));
            // Cannot truncate: checked against u16::MAX above.
            out.extend_from_slice(&(element.value.len() as u16).to_be_bytes());
            out.extend_from_slice(&element.value);
        }
        Ok(out)
    }
}

/// Splits a body into elements; every element must lie wholly inside the body.
fn decode_elements(body: &[u8]) -> Result<Vec<Element>, DecodeError> {
    let mut elements = Vec::new();
    let mut rest = body;
    while !rest.is_empty() {
        let offset = body.len() - rest.len();
        let Some((&[tag, l0, l1], after_header)) = rest.split_first_chunk::<ELEMENT_HEADER_LEN>()
        else {
            return Err(DecodeError::TruncatedElementHeader {
                offset,
                remaining: rest.len(),
            });
        };
        let tag = Tag::from(tag);
        let len = usize::from(u16::from_be_bytes([l0, l1]));
        let Some((value, after_value)) = after_header.split_at_checked(len) else {
            return Err(DecodeError::ElementOverrun {
                tag,
                len,
                available: after_header.len(),
            });
        };
        elements.push(Element::new(tag, value.to_vec()));
        rest = after_value;
    }
    Ok(elements)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::MAX_BODY_LEN;

    fn frame_bytes(command: u8, session_id: u32, body: &[u8]) -> Vec<u8> {
        let mut out = vec![PROTOCOL_ID, command];
        out.extend_from_slice(&session_id.to_be_bytes());
        out.extend_from_slice(&(body.len() as u16).to_be_bytes());
        out.extend_from_slice(body);
        out
    }

    #[test]
    fn header_round_trip_is_big_endian() {
        let header = Header {
            command: Command::from(1),
            session_id: 0x1a2b_3c41,
            body_len: 0x0102,
        };
        let bytes = header.encode();
        assert_eq!(bytes, [0x55, 0x01, 0x1a, 0x2b, 0x3c, 0x41, 0x01, 0x02]);
        assert_eq!(Header::decode(&bytes), Ok(header));
    }

    #[test]
    fn header_rejects_other_protocol_id() {
        let err = Header::decode(&[0x54, 1, 0, 0, 0, 1, 0, 0]).unwrap_err();
        assert_eq!(err, DecodeError::ProtocolId { found: 0x54 });
        assert_eq!(err.kind(), "protocol-id");
    }

    #[test]
    fn decodes_spec_example() {
        // Spec 1.2: AUTH_REQUEST with VERSION=3, AUTH_TYPE=0.
        let bytes = hex::decode("55011a2b3c4100080700010308000100").unwrap();
        let frame = Frame::decode(&bytes).unwrap();
        assert_eq!(frame.command, Command::AuthRequest);
        assert_eq!(frame.session_id, 0x1a2b_3c41);
        assert_eq!(
            frame.elements,
            vec![
                Element::new(Tag::from(7), vec![3]),
                Element::new(Tag::from(8), vec![0])
            ]
        );
        assert_eq!(frame.encode().unwrap(), bytes);
    }

    #[test]
    fn empty_body_is_legal() {
        let bytes = frame_bytes(17, 5, &[]);
        let frame = Frame::decode(&bytes).unwrap();
        assert!(frame.elements.is_empty());
        assert_eq!(frame.encode().unwrap(), bytes);
    }

    #[test]
    fn short_input_is_truncated_header() {
        for len in 0..HEADER_LEN {
            let bytes = vec![PROTOCOL_ID; len];
            let err = Frame::decode(&bytes).unwrap_err();
            assert_eq!(err, DecodeError::TruncatedHeader { len });
            assert_eq!(err.kind(), "truncated-header");
        }
    }

    #[test]
    fn protocol_id_checked_before_length() {
        let mut bytes = frame_bytes(2, 1, &[1, 0, 1, 1]);
        bytes[0] = 0;
        assert_eq!(Frame::decode(&bytes).unwrap_err().kind(), "protocol-id");
    }

    #[test]
    fn missing_body_bytes_are_truncated_frame() {
        let mut bytes = frame_bytes(2, 1, &[1, 0, 1, 1]);
        bytes.pop();
        let err = Frame::decode(&bytes).unwrap_err();
        assert_eq!(
            err,
            DecodeError::TruncatedFrame {
                announced: 4,
                available: 3
            }
        );
        assert_eq!(err.kind(), "truncated-frame");
    }

    #[test]
    fn extra_bytes_are_trailing_bytes() {
        let mut bytes = frame_bytes(2, 1, &[1, 0, 1, 1]);
        bytes.extend_from_slice(&[0x55, 0x02]);
        let err = Frame::decode(&bytes).unwrap_err();
        assert_eq!(
            err,
            DecodeError::TrailingBytes {
                announced: 4,
                extra: 2
            }
        );
        assert_eq!(err.kind(), "trailing-bytes");
    }

    #[test]
    fn decode_body_checks_length_against_header() {
        let header = Header {
            command: Command::from(10),
            session_id: 9,
            body_len: 4,
        };
        assert_eq!(
            Frame::decode_body(&header, &[1, 0, 1, 1]).unwrap(),
            Frame {
                command: Command::from(10),
                session_id: 9,
                elements: vec![Element::new(Tag::from(1), vec![1])]
            }
        );
        assert_eq!(
            Frame::decode_body(&header, &[1, 0, 1]).unwrap_err().kind(),
            "truncated-frame"
        );
        assert_eq!(
            Frame::decode_body(&header, &[1, 0, 1, 1, 0])
                .unwrap_err()
                .kind(),
            "trailing-bytes"
        );
    }

    #[test]
    fn partial_element_header_is_rejected() {
        for tail in [&[0x0d][..], &[0x0d, 0x00]] {
            let mut body = vec![1, 0, 1, 1];
            body.extend_from_slice(tail);
            let err = Frame::decode(&frame_bytes(2, 1, &body)).unwrap_err();
            assert_eq!(
                err,
                DecodeError::TruncatedElementHeader {
                    offset: 4,
                    remaining: tail.len()
                }
            );
            assert_eq!(err.kind(), "truncated-element-header");
        }
    }

    #[test]
    fn value_past_body_end_is_overrun() {
        let err =
            Frame::decode(&frame_bytes(2, 1, &[0x0d, 0x00, 0x10, b'S', b'E', b'P'])).unwrap_err();
        assert_eq!(
            err,
            DecodeError::ElementOverrun {
                tag: Tag::DeviceName,
                len: 16,
                available: 3
            }
        );
        assert_eq!(err.kind(), "element-overrun");
    }

    #[test]
    fn zero_length_elements_and_unknown_tags_are_kept() {
        let body = [0x63, 0x00, 0x00, 0x63, 0x00, 0x01, 0xff, 0x01, 0x00, 0x00];
        let bytes = frame_bytes(200, 7, &body);
        let frame = Frame::decode(&bytes).unwrap();
        assert_eq!(
            frame.elements,
            vec![
                Element::new(Tag::from(0x63), vec![]),
                Element::new(Tag::from(0x63), vec![0xff]),
                Element::new(Tag::from(1), vec![]),
            ]
        );
        assert_eq!(frame.encode().unwrap(), bytes);
    }

    #[test]
    fn largest_body_encodes_and_one_more_byte_does_not() {
        let value_len = MAX_BODY_LEN - ELEMENT_HEADER_LEN;
        let mut frame = Frame {
            command: Command::from(9),
            session_id: 1,
            elements: vec![Element::new(Tag::from(4), vec![0xab; value_len])],
        };
        let bytes = frame.encode().unwrap();
        assert_eq!(bytes.len(), HEADER_LEN + MAX_BODY_LEN);
        assert_eq!(Frame::decode(&bytes).unwrap(), frame);

        frame.elements.push(Element::new(Tag::from(1), vec![]));
        assert_eq!(
            frame.encode().unwrap_err(),
            EncodeError::BodyTooLong {
                len: MAX_BODY_LEN + 3
            }
        );
    }

    #[test]
    fn oversized_element_value_is_rejected() {
        let frame = Frame {
            command: Command::from(9),
            session_id: 1,
            elements: vec![Element::new(Tag::from(4), vec![0; 65_536])],
        };
        let err = frame.encode().unwrap_err();
        assert_eq!(
            err,
            EncodeError::ElementTooLong {
                tag: Tag::Certificate,
                len: 65_536
            }
        );
        assert_eq!(err.kind(), "element-too-long");
    }

    #[test]
    fn debug_redacts_password_values() {
        let frame = Frame {
            command: Command::from(2),
            session_id: 1,
            elements: vec![
                Element::new(Tag::Password, b"123456\0".to_vec()),
                Element::new(Tag::DeviceName, b"SEP1\0".to_vec()),
            ],
        };
        let text = format!("{frame:?}");
        assert!(!text.contains("313233343536"), "{text}");
        assert!(text.contains("<redacted, 7 bytes>"), "{text}");
        assert!(text.contains("5345503100"), "{text}");
    }
}
