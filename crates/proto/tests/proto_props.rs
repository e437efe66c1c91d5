//! Property tests of the codec: decoding is total, and encoding and decoding are inverse.

#[path = "common/vectors.rs"]
mod vectors;

use capf_proto::{
    AuthRequest, AuthResponse, AuthType, CertType, CertificateElement, CertificateEntry, Command,
    CurveId, Element, Empty, FetchCertificateResponse, Frame, HashId, KeyGenerateRequest,
    KeyGenerateResponse, KeyType, Message, Reason, ReasonOnly, Sha2SignedData,
    StoreCertificateRequest, SudiData, Tag, HEADER_LEN, PROTOCOL_ID,
};
use proptest::collection::vec;
use proptest::option;
use proptest::prelude::*;
use std::sync::OnceLock;

/// Every frame of every vector file, loaded once.
fn vector_frames() -> &'static [Vec<u8>] {
    static FRAMES: OnceLock<Vec<Vec<u8>>> = OnceLock::new();
    FRAMES.get_or_init(|| {
        vectors::load_all()
            .into_iter()
            .flat_map(|file| file.frames.into_iter().map(|frame| frame.bytes))
            .collect()
    })
}

fn config() -> ProptestConfig {
    ProptestConfig {
        cases: 256,
        ..ProptestConfig::default()
    }
}

/// A header announcing exactly the given body.
fn with_header(command: u8, session_id: u32, body: &[u8]) -> Vec<u8> {
    let mut bytes = vec![PROTOCOL_ID, command];
    bytes.extend_from_slice(&session_id.to_be_bytes());
    bytes.extend_from_slice(&(body.len() as u16).to_be_bytes());
    bytes.extend_from_slice(body);
    bytes
}

/// Known tags, a few undefined ones, and anything at all.
fn any_tag() -> impl Strategy<Value = u8> {
    prop_oneof![4 => 1u8..=20, 1 => Just(99u8), 1 => any::<u8>()]
}

fn any_element() -> impl Strategy<Value = Element> {
    (any_tag(), vec(any::<u8>(), 0..24)).prop_map(|(tag, value)| Element {
        tag: Tag::from(tag),
        value,
    })
}

fn any_command() -> impl Strategy<Value = u8> {
    prop_oneof![4 => 0u8..=24, 1 => any::<u8>()]
}

fn any_frame() -> impl Strategy<Value = Frame> {
    (any_command(), any::<u32>(), vec(any_element(), 0..8)).prop_map(
        |(command, session_id, elements)| Frame {
            command: Command::from(command),
            session_id,
            elements,
        },
    )
}

/// The bytes of a frame whose elements hold well-formed values for their tags most of the
/// time, so that the typed layer gets past its first check often.
fn plausible_body() -> impl Strategy<Value = Vec<u8>> {
    let element = prop_oneof![
        (1u8..=20, any::<u8>()).prop_map(|(t, v)| vec![t, 0, 1, v]),
        (any::<u8>(), any::<u8>()).prop_map(|(hi, lo)| vec![10, 0, 2, hi, lo]),
        "[ -~]{0,15}".prop_map(|s| {
            let mut out = vec![13, 0, (s.len() + 1) as u8];
            out.extend_from_slice(s.as_bytes());
            out.push(0);
            out
        }),
        any_element().prop_map(|e| {
            let mut out = vec![u8::from(e.tag)];
            out.extend_from_slice(&(e.value.len() as u16).to_be_bytes());
            out.extend_from_slice(&e.value);
            out
        }),
    ];
    vec(element, 0..6).prop_map(|parts| parts.concat())
}

fn bytes(max: usize) -> impl Strategy<Value = Vec<u8>> {
    vec(any::<u8>(), 1..max)
}

fn sha2_id() -> impl Strategy<Value = HashId> {
    prop_oneof![Just(HashId::Sha256), Just(HashId::Sha512)]
}

/// Any value of a wire enum, named or not.
fn any_of<T: From<u8> + std::fmt::Debug>() -> impl Strategy<Value = T> {
    any::<u8>().prop_map(T::from)
}

fn certificate() -> impl Strategy<Value = CertificateElement> {
    vec(
        (any::<u8>(), any::<u8>(), any::<u8>(), bytes(64)).prop_map(
            |(marker, reserved, cert_type, der)| CertificateEntry {
                marker,
                reserved,
                cert_type: CertType::from(cert_type),
                der,
            },
        ),
        1..4,
    )
    .prop_map(|entries| CertificateElement { entries })
}

fn auth_response() -> impl Strategy<Value = AuthResponse> {
    (
        (
            option::of(any_of::<Reason>()),
            option::of(any::<u8>()),
            option::of("[ -~]{0,15}"),
            option::of("[ -~]{0,16}"),
        ),
        (
            option::of(certificate()),
            option::of(bytes(64)),
            option::of((sha2_id(), bytes(64))),
            option::of((bytes(64), bytes(64), sha2_id(), bytes(64))),
        ),
    )
        .prop_map(
            |((reason, version, device_name, password), (certificate, signed_data, sha2, sudi))| {
                AuthResponse {
                    reason,
                    version,
                    device_name,
                    password,
                    certificate,
                    signed_data,
                    sha2_signed_data: sha2
                        .map(|(hash_id, signature)| Sha2SignedData { hash_id, signature }),
                    sudi: sudi.map(
                        |(certificate, sha1_signature, sha2_hash_id, sha2_signature)| SudiData {
                            certificate,
                            sha1_signature,
                            sha2_hash_id,
                            sha2_signature,
                        },
                    ),
                    ..AuthResponse::default()
                }
            },
        )
}

fn reason_only() -> impl Strategy<Value = ReasonOnly> {
    option::of(any_of::<Reason>()).prop_map(|reason| ReasonOnly {
        reason,
        ..ReasonOnly::default()
    })
}

/// Typed messages as the server would build them (nothing extra).
fn typed_message() -> impl Strategy<Value = Message> {
    prop_oneof![
        (option::of(any::<u8>()), option::of(any_of::<AuthType>())).prop_map(
            |(version, auth_type)| {
                Message::AuthRequest(AuthRequest {
                    version,
                    auth_type,
                    ..AuthRequest::default()
                })
            }
        ),
        auth_response().prop_map(Message::AuthResponse),
        (
            option::of(any::<u16>()),
            option::of(any_of::<KeyType>()),
            option::of(any_of::<CurveId>())
        )
            .prop_map(|(key_size, key_type, curve)| {
                Message::KeyGenerateRequest(KeyGenerateRequest {
                    key_size,
                    key_type,
                    curve,
                    ..KeyGenerateRequest::default()
                })
            }),
        (option::of(bytes(300)), option::of(any_of::<Reason>())).prop_map(
            |(public_key, reason)| {
                Message::KeyGenerateResponse(KeyGenerateResponse {
                    public_key,
                    reason,
                    ..KeyGenerateResponse::default()
                })
            }
        ),
        (option::of(any_of::<CertType>()), option::of(certificate())).prop_map(
            |(certificate_type, certificate)| {
                Message::StoreCertificateRequest(StoreCertificateRequest {
                    certificate_type,
                    certificate,
                    ..StoreCertificateRequest::default()
                })
            }
        ),
        (option::of(any_of::<Reason>()), option::of(certificate())).prop_map(
            |(reason, certificate)| {
                Message::FetchCertificateResponse(FetchCertificateResponse {
                    reason,
                    certificate,
                    ..FetchCertificateResponse::default()
                })
            }
        ),
        reason_only().prop_map(Message::StoreCertificateResponse),
        reason_only().prop_map(Message::DeleteCertificateResponse),
        reason_only().prop_map(Message::EndSession),
        Just(Message::FetchCertificateRequest(Empty::default())),
        Just(Message::DeleteCertificateRequest(Empty::default())),
        Just(Message::RequestInProgress(Empty::default())),
        // Commands without a typed view carry their raw frame.
        (
            prop_oneof![Just(0u8), 5u8..=8, Just(16u8), 18u8..=255],
            vec(any_element(), 0..5)
        )
            .prop_map(|(command, elements)| Message::Other(Frame {
                command: Command::from(command),
                session_id: 0,
                elements,
            })),
    ]
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn arbitrary_bytes_never_panic(input in vec(any::<u8>(), 0..128)) {
        let frame = Frame::decode(&input);
        let message = Message::decode(&input);
        // The typed layer only ever adds failures on top of the frame layer.
        if frame.is_err() {
            prop_assert_eq!(frame.unwrap_err(), message.unwrap_err());
        }
    }

    #[test]
    fn framed_arbitrary_bodies_decode_or_fail_cleanly(
        command in any_command(),
        session_id in any::<u32>(),
        body in prop_oneof![vec(any::<u8>(), 0..96), plausible_body()],
    ) {
        let input = with_header(command, session_id, &body);
        if let Ok(frame) = Frame::decode(&input) {
            prop_assert_eq!(frame.encode().unwrap(), input.clone());
        }
        if let Ok((sid, message)) = Message::decode(&input) {
            prop_assert_eq!(sid, session_id);
            prop_assert_eq!(message.encode(sid).unwrap(), input);
        }
    }

    #[test]
    fn raw_frames_round_trip(frame in any_frame()) {
        let bytes = frame.encode().unwrap();
        prop_assert_eq!(bytes.len(), HEADER_LEN + frame.elements.iter().map(|e| 3 + e.value.len()).sum::<usize>());
        prop_assert_eq!(&Frame::decode(&bytes).unwrap(), &frame);
        // Typing may refuse the values, but whatever it accepts it gives back unchanged.
        if let Ok(message) = Message::from_frame(&frame) {
            prop_assert_eq!(message.to_frame(frame.session_id), frame.clone());
            prop_assert_eq!(message.encode(frame.session_id).unwrap(), bytes);
        }
    }

    #[test]
    fn typed_messages_round_trip(message in typed_message(), session_id in any::<u32>()) {
        let bytes = message.encode(session_id).unwrap();
        let (sid, decoded) = Message::decode(&bytes).unwrap();
        prop_assert_eq!(sid, session_id);
        match (&message, &decoded) {
            // A raw frame carries the session id of its header.
            (Message::Other(sent), Message::Other(got)) => {
                prop_assert_eq!(&sent.elements, &got.elements);
                prop_assert_eq!(sent.command, got.command);
            }
            _ => prop_assert_eq!(&decoded, &message),
        }
        prop_assert_eq!(decoded.encode(session_id).unwrap(), bytes);
    }

    #[test]
    fn mutated_vector_frames_never_panic(
        pick in any::<prop::sample::Index>(),
        edits in vec((any::<prop::sample::Index>(), any::<u8>()), 1..4),
        cut in any::<prop::sample::Index>(),
        truncate in any::<bool>(),
    ) {
        let mut input = pick.get(vector_frames()).clone();
        for (at, byte) in &edits {
            let index = at.index(input.len());
            input[index] = *byte;
        }
        if truncate {
            input.truncate(cut.index(input.len()));
        }
        if let Ok((sid, message)) = Message::decode(&input) {
            prop_assert_eq!(message.encode(sid).unwrap(), input);
        }
    }
}
