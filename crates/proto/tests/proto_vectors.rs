//! Replays every vector file through the codec: each captured frame decodes at both layers
//! and re-encodes byte for byte, the typed view agrees with the file's metadata and with the
//! independent decoder's annotations, and each hand-made malformed frame gets the verdict its
//! `@expect` line gives.

#[path = "common/vectors.rs"]
mod vectors;

use capf_model::keyspec::{Curve, KeySpec};
use capf_proto::{
    AuthResponse, CertificateElement, Command, DecodeError, Frame, HashId, Header, Message, Reason,
    Tag, HEADER_LEN,
};
use vectors::{Direction, VectorFile, VectorFrame};

/// Verdicts of malformed-frames.txt that the codec itself must produce.
const CODEC_KINDS: &[&str] = &[
    "protocol-id",
    "truncated-header",
    "truncated-frame",
    "truncated-element-header",
    "element-overrun",
    "bad-fixed-length",
    "string-not-terminated",
    "string-embedded-nul",
    "duplicate-element",
];

/// Of those, the ones raised while splitting the body into raw elements (the rest are raised
/// by the typed layer, on a frame that splits fine).
const FRAME_KINDS: &[&str] = &[
    "protocol-id",
    "truncated-header",
    "truncated-frame",
    "truncated-element-header",
    "element-overrun",
];

/// Verdicts that belong to the session: the codec must decode these frames.
const SESSION_KINDS: &[&str] = &[
    "session-id",
    "missing-device-name",
    "unexpected-command",
    "bad-device-name",
    "version",
];

fn at(file: &VectorFile, frame: &VectorFrame) -> String {
    format!("{}.txt:{}", file.name, frame.line)
}

fn flows() -> Vec<VectorFile> {
    let flows: Vec<VectorFile> = vectors::load_all()
        .into_iter()
        .filter(VectorFile::is_flow)
        .collect();
    assert!(!flows.is_empty(), "no captured flows in tests/vectors");
    flows
}

/// Decodes at both layers, checks both re-encode to the same bytes, and returns the typed view.
fn decode_both_ways(file: &VectorFile, frame: &VectorFrame) -> (Frame, Message) {
    let here = at(file, frame);
    let raw = Frame::decode(&frame.bytes).unwrap_or_else(|e| panic!("{here}: {e}"));
    assert_eq!(
        raw.encode().unwrap(),
        frame.bytes,
        "{here}: frame re-encoding"
    );

    // The reader's path: exact header, then exact body.
    let (head, body) = frame.bytes.split_first_chunk::<HEADER_LEN>().unwrap();
    let header = Header::decode(head).unwrap();
    assert_eq!(usize::from(header.body_len), body.len(), "{here}");
    assert_eq!(header.encode(), *head, "{here}");
    assert_eq!(Frame::decode_body(&header, body).unwrap(), raw, "{here}");

    let message = Message::from_frame(&raw).unwrap_or_else(|e| panic!("{here}: {e}"));
    assert_eq!(
        message.to_frame(raw.session_id),
        raw,
        "{here}: typed re-framing"
    );
    let (session_id, again) = Message::decode(&frame.bytes).unwrap();
    assert_eq!(session_id, raw.session_id, "{here}");
    assert_eq!(again, message, "{here}");
    assert_eq!(
        message.encode(session_id).unwrap(),
        frame.bytes,
        "{here}: typed re-encoding"
    );
    assert_eq!(message.command(), raw.command, "{here}");
    (raw, message)
}

#[test]
fn every_flow_frame_round_trips_at_both_layers() {
    for file in flows() {
        assert!(!file.frames.is_empty(), "{}: no frames", file.name);
        let session = file
            .meta("session")
            .map(|s| u32::from_str_radix(s, 16).expect("@session is hex"))
            .unwrap_or_else(|| panic!("{}: no @session", file.name));
        for frame in &file.frames {
            let here = at(&file, frame);
            let (raw, message) = decode_both_ways(&file, frame);
            assert_eq!(raw.session_id, session, "{here}: session id");
            assert!(
                !matches!(message, Message::Other(_)),
                "{here}: {} has no typed view",
                message.name()
            );
            let from_server = matches!(
                message,
                Message::AuthRequest(_)
                    | Message::KeyGenerateRequest(_)
                    | Message::StoreCertificateRequest(_)
                    | Message::FetchCertificateRequest(_)
                    | Message::DeleteCertificateRequest(_)
                    | Message::EndSession(_)
            );
            let expected_dir = if from_server {
                Direction::ServerToClient
            } else {
                Direction::ClientToServer
            };
            assert_eq!(frame.dir, expected_dir, "{here}: {}", message.name());
        }
    }
}

/// What the annotator writes for each element of a typed message, in wire order.
fn describe(raw: &Frame, message: &Message) -> Vec<String> {
    fn cert(c: &CertificateElement) -> String {
        format!(
            "CERTIFICATE[type={}, DER {} bytes",
            u8::from(c.first().cert_type),
            c.first().der.len()
        )
    }
    fn auth(m: &AuthResponse, t: Tag) -> Option<String> {
        Some(match t {
            Tag::Reason => format!("REASON={}", u8::from(m.reason?)),
            Tag::Version => format!("VERSION={}", m.version?),
            Tag::Password => format!(
                "PASSWORD='{}'+NUL ({} bytes)",
                m.password.as_ref()?,
                m.password.as_ref()?.len() + 1
            ),
            Tag::DeviceName => format!(
                "DEVICE_NAME='{}'+NUL ({} bytes)",
                m.device_name.as_ref()?,
                m.device_name.as_ref()?.len() + 1
            ),
            Tag::Certificate => cert(m.certificate.as_ref()?),
            Tag::SignedData => format!("SIGNED_DATA[{} bytes]", m.signed_data.as_ref()?.len()),
            Tag::SudiData => {
                let s = m.sudi.as_ref()?;
                format!(
                    "SUDI_DATA[(0, {} bytes), (1, {} bytes), ({}, {} bytes)]",
                    s.certificate.len(),
                    s.sha1_signature.len(),
                    u8::from(s.sha2_hash_id),
                    s.sha2_signature.len()
                )
            }
            Tag::Sha2SignedData => {
                let s = m.sha2_signed_data.as_ref()?;
                format!(
                    "SHA2_SIGNED_DATA[hash={} (SHA{}), signature {} bytes]",
                    u8::from(s.hash_id),
                    if s.hash_id == HashId::Sha512 {
                        512
                    } else {
                        256
                    },
                    s.signature.len()
                )
            }
            _ => return None,
        })
    }
    raw.elements
        .iter()
        .map(|e| {
            let text = match message {
                Message::AuthRequest(m) => match e.tag {
                    Tag::Version => m.version.map(|v| format!("VERSION={v}")),
                    Tag::AuthType => m.auth_type.map(|v| format!("AUTH_TYPE={}", u8::from(v))),
                    _ => None,
                },
                Message::AuthResponse(m) => auth(m, e.tag),
                Message::KeyGenerateRequest(m) => match e.tag {
                    Tag::KeySize => m.key_size.map(|v| format!("KEY_SIZE={v}")),
                    Tag::KeyType => m.key_type.map(|v| format!("KEY_TYPE={}", u8::from(v))),
                    Tag::Curve => m.curve.map(|v| format!("CURVE={}", u8::from(v))),
                    _ => None,
                },
                Message::KeyGenerateResponse(m) => match e.tag {
                    Tag::Reason => m.reason.map(|v| format!("REASON={}", u8::from(v))),
                    // The annotator names the key type before the size; check the size.
                    Tag::PublicKey => m
                        .public_key
                        .as_ref()
                        .map(|k| format!(", {} bytes]", k.len())),
                    _ => None,
                },
                Message::StoreCertificateRequest(m) => match e.tag {
                    Tag::CertificateType => m
                        .certificate_type
                        .map(|v| format!("CERTIFICATE_TYPE={}", u8::from(v))),
                    Tag::Certificate => m.certificate.as_ref().map(cert),
                    _ => None,
                },
                Message::FetchCertificateResponse(m) => match e.tag {
                    Tag::Reason => m.reason.map(|v| format!("REASON={}", u8::from(v))),
                    Tag::Certificate => m.certificate.as_ref().map(cert),
                    _ => None,
                },
                Message::StoreCertificateResponse(m)
                | Message::DeleteCertificateResponse(m)
                | Message::EndSession(m) => match e.tag {
                    Tag::Reason => m.reason.map(|v| format!("REASON={}", u8::from(v))),
                    _ => None,
                },
                _ => None,
            };
            text.unwrap_or_else(|| format!("<untyped {}>", e.tag.name()))
        })
        .collect()
}

#[test]
fn typed_view_matches_the_independent_annotations() {
    for file in flows() {
        for (index, frame) in file.frames.iter().enumerate() {
            let here = at(&file, frame);
            let (raw, message) = decode_both_ways(&file, frame);
            let number = format!("{}. ", index + 1);
            let note = frame
                .comments
                .iter()
                .find_map(|c| c.strip_prefix(&number))
                .unwrap_or_else(|| panic!("{here}: no annotation {number:?}"));
            // "<n>. NAME (cmd), body <len> bytes: EL1; EL2; ..."
            let (head, elements) = note
                .split_once(" bytes: ")
                .unwrap_or_else(|| panic!("{here}: unexpected annotation {note:?}"));
            let body_len = frame.bytes.len() - HEADER_LEN;
            assert!(
                head.ends_with(&format!(
                    "{} ({}), body {body_len}",
                    message.name(),
                    u8::from(message.command())
                )),
                "{here}: {head:?}"
            );
            let annotated: Vec<&str> = if elements == "(no elements)" {
                Vec::new()
            } else {
                elements.split("; ").collect()
            };
            let ours = describe(&raw, &message);
            assert_eq!(annotated.len(), ours.len(), "{here}: {note:?} vs {ours:?}");
            for (theirs, ours) in annotated.iter().zip(&ours) {
                assert!(
                    theirs.contains(ours.as_str()),
                    "{here}: {theirs:?} vs {ours:?}"
                );
            }
        }
    }
}

fn messages(file: &VectorFile) -> Vec<Message> {
    file.frames
        .iter()
        .map(|frame| decode_both_ways(file, frame).1)
        .collect()
}

#[test]
fn typed_view_matches_the_file_metadata() {
    for file in flows() {
        let name = &file.name;
        let messages = messages(&file);

        let auth: Vec<&AuthResponse> = messages
            .iter()
            .filter_map(|m| match m {
                Message::AuthResponse(a) => Some(a),
                _ => None,
            })
            .collect();
        let [auth] = auth[..] else {
            panic!("{name}: expected exactly one AUTH_RESPONSE");
        };
        assert_eq!(
            auth.device_name.as_deref(),
            file.meta("device"),
            "{name}: @device"
        );
        assert!(auth.extra.unknown_tags().next().is_none(), "{name}");

        let auth_meta = file.meta("auth").expect("@auth");
        if let Some(rest) = auth_meta.strip_prefix("password ") {
            let sent = match rest.split_once("phone sends ") {
                Some((_, sent)) if !sent.starts_with("the same") => sent,
                _ => rest.split(' ').next().unwrap_or_default(),
            };
            assert_eq!(auth.password.as_deref(), Some(sent), "{name}: @auth");
            assert!(auth.certificate.is_none(), "{name}");
        } else if auth_meta.starts_with("no password") {
            assert_eq!(auth.password.as_deref(), Some(""), "{name}: @auth");
            assert!(auth.certificate.is_none(), "{name}");
        } else if auth_meta.starts_with("existing certificate") {
            assert!(auth.certificate.is_some(), "{name}: certificate");
            assert!(auth.signed_data.is_some(), "{name}: signed data");
            assert!(auth.sha2_signed_data.is_some(), "{name}: sha2 signed data");
            assert_eq!(auth.sudi.is_some(), auth_meta.contains("SUDI"), "{name}");
        }

        let operation = file.meta("operation").expect("@operation");
        let keys: Vec<Option<KeySpec>> = messages
            .iter()
            .filter_map(|m| match m {
                Message::KeyGenerateRequest(k) => Some(k.key_spec()),
                _ => None,
            })
            .collect();
        let expected_key = if operation.contains("never reached") {
            None
        } else if let Some((_, bits)) = operation.split_once("RSA ") {
            Some(KeySpec::Rsa(bits.trim().parse().expect("RSA bits")))
        } else if let Some((_, curve)) = operation.split_once("EC ") {
            let curve = match curve.trim() {
                "secp256r1" => Curve::P256,
                "secp384r1" => Curve::P384,
                "secp521r1" => Curve::P521,
                other => panic!("{name}: curve {other}"),
            };
            Some(KeySpec::Ec(curve))
        } else {
            None
        };
        match expected_key {
            Some(spec) => assert_eq!(keys, vec![Some(spec)], "{name}: @operation"),
            None => assert!(keys.is_empty(), "{name}: unexpected key request"),
        }
        let has = |command: Command| messages.iter().any(|m| m.command() == command);
        assert_eq!(
            has(Command::FetchCertificateRequest),
            operation.starts_with("fetch"),
            "{name}"
        );
        assert_eq!(
            has(Command::DeleteCertificateRequest),
            operation.starts_with("delete"),
            "{name}"
        );
        if expected_key.is_some() {
            assert!(has(Command::StoreCertificateRequest), "{name}");
        }

        let outcome = file.meta("outcome").expect("@outcome");
        let (_, reason) = outcome
            .split_once("END_SESSION reason ")
            .unwrap_or_else(|| panic!("{name}: @outcome {outcome}"));
        let reason: u8 = reason
            .split(' ')
            .next()
            .and_then(|r| r.parse().ok())
            .expect("reason number");
        match messages.last() {
            Some(Message::EndSession(end)) => {
                assert_eq!(end.reason, Some(Reason::from(reason)), "{name}: @outcome")
            }
            other => panic!("{name}: last message is {other:?}"),
        }
    }
}

#[test]
fn malformed_frames_get_their_verdicts() {
    let file = vectors::load("malformed-frames");
    assert!(!file.frames.is_empty());
    let assigned = 0x1a2b_3c41;
    for frame in &file.frames {
        let here = at(&file, frame);
        let verdict = frame
            .expect
            .as_deref()
            .unwrap_or_else(|| panic!("{here}: no @expect"));
        let decoded = Message::decode(&frame.bytes);
        match verdict.strip_prefix("reject:") {
            None => {
                let (_, message) = decode_both_ways(&file, frame);
                let Message::AuthResponse(auth) = &message else {
                    panic!("{here}: decoded as {}", message.name());
                };
                let unknown: Vec<u8> = auth.extra.unknown_tags().map(u8::from).collect();
                match verdict {
                    "accept" => assert!(unknown.is_empty(), "{here}: {unknown:?}"),
                    "accept-skip-unknown" => {
                        assert_eq!(unknown, vec![99], "{here}");
                        assert_eq!(auth.device_name.as_deref(), Some("SEP001122334455"));
                    }
                    other => panic!("{here}: unknown verdict {other:?}"),
                }
            }
            Some(kind) if CODEC_KINDS.contains(&kind) => {
                let err: DecodeError = decoded.expect_err(&here);
                assert_eq!(err.kind(), kind, "{here}: {err}");
                let frame_result = Frame::decode(&frame.bytes);
                if FRAME_KINDS.contains(&kind) {
                    assert_eq!(frame_result.map_err(|e| e.kind()), Err(kind), "{here}");
                } else {
                    assert!(frame_result.is_ok(), "{here}: raw framing should pass");
                }
            }
            Some(kind) if SESSION_KINDS.contains(&kind) => {
                // The codec accepts the frame and hands the session what it needs to refuse it.
                let (_, message) = decode_both_ways(&file, frame);
                let (session_id, _) = decoded.unwrap();
                let auth = match &message {
                    Message::AuthResponse(auth) => Some(auth),
                    _ => None,
                };
                match kind {
                    "session-id" => assert_ne!(session_id, assigned, "{here}"),
                    "unexpected-command" => assert!(auth.is_none(), "{here}"),
                    "missing-device-name" => {
                        assert_eq!(auth.map(|a| a.device_name.is_none()), Some(true), "{here}")
                    }
                    "bad-device-name" => {
                        let name = auth.and_then(|a| a.device_name.clone()).expect(&here);
                        let hex = name.strip_prefix("SEP").unwrap_or_default();
                        assert!(
                            hex.len() != 12 || !hex.chars().all(|c| c.is_ascii_hexdigit()),
                            "{here}: {name} looks valid"
                        );
                    }
                    "version" => {
                        assert_eq!(auth.and_then(|a| a.version), Some(4), "{here}")
                    }
                    _ => unreachable!(),
                }
                if kind != "session-id" {
                    assert_eq!(session_id, assigned, "{here}");
                }
            }
            Some(other) => panic!("{here}: verdict {other:?} is neither codec nor session"),
        }
    }
}

#[test]
fn vector_loader_sees_every_file() {
    let all = vectors::load_all();
    let names: Vec<&str> = all.iter().map(|f| f.name.as_str()).collect();
    let mut sorted = names.clone();
    sorted.sort_unstable();
    assert_eq!(names, sorted);
    assert!(names.contains(&"malformed-frames"));
    for file in all.iter().filter(|f| f.is_flow()) {
        assert_eq!(file.meta("flow"), Some(file.name.as_str()));
    }
    let listed = std::fs::read_dir(vectors::dir())
        .unwrap()
        .filter(|e| {
            e.as_ref()
                .unwrap()
                .file_name()
                .to_string_lossy()
                .ends_with(".txt")
        })
        .count();
    assert_eq!(all.len(), listed);
}
