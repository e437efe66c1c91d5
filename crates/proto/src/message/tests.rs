//! Codec tests of the typed layer.
use super::auth::MAX_SIGNED_DATA;
use super::keygen::MAX_PUBLIC_KEY;
use super::layout::MAX_CERTIFICATE;
use super::*;
use crate::{CertType, CurveId, HashId, KeyType, Reason};
use capf_model::keyspec::{Curve, KeySpec};

fn el(tag: impl Into<Tag>, value: &[u8]) -> Element {
    Element::new(tag.into(), value.to_vec())
}

fn frame(command: impl Into<Command>, elements: Vec<Element>) -> Frame {
    Frame {
        command: command.into(),
        session_id: 0x1a2b_3c41,
        elements,
    }
}

fn auth_response(elements: Vec<Element>) -> Result<AuthResponse, DecodeError> {
    match Message::from_frame(&frame(Command::AuthResponse, elements))? {
        Message::AuthResponse(m) => Ok(m),
        other => panic!("typed as {}", other.name()),
    }
}

fn kind_of(command: impl Into<Command>, elements: Vec<Element>) -> &'static str {
    Message::from_frame(&frame(command, elements))
        .unwrap_err()
        .kind()
}

fn round_trips(f: &Frame) {
    let message = Message::from_frame(f).unwrap();
    assert_eq!(&message.to_frame(f.session_id), f);
}

fn cert_entry(marker: u8, cert_type: u8, der: &[u8]) -> Vec<u8> {
    let mut out = vec![marker];
    out.extend_from_slice(&((der.len() + 2) as u16).to_be_bytes());
    out.extend_from_slice(&[0, cert_type]);
    out.extend_from_slice(der);
    out
}

fn block(id: u8, bytes: &[u8]) -> Vec<u8> {
    let mut out = vec![id];
    out.extend_from_slice(&(bytes.len() as u16).to_be_bytes());
    out.extend_from_slice(bytes);
    out
}

fn sudi(ids: [u8; 3]) -> Vec<u8> {
    [
        block(ids[0], b"cert"),
        block(ids[1], b"sig1"),
        block(ids[2], b"sig2"),
    ]
    .concat()
}

#[test]
fn auth_response_with_password_decodes() {
    let m = auth_response(vec![
        el(Tag::Reason, &[1]),
        el(Tag::Version, &[3]),
        el(Tag::Password, b"123456\0"),
        el(Tag::DeviceName, b"SEP001122334455\0"),
    ])
    .unwrap();
    assert_eq!(m.reason, Some(Reason::UpdateCertificate));
    assert_eq!(m.version, Some(3));
    assert_eq!(m.password.as_deref(), Some("123456"));
    assert_eq!(m.device_name.as_deref(), Some("SEP001122334455"));
    assert!(m.extra.is_empty());
}

#[test]
fn single_nul_password_is_empty_string() {
    let m = auth_response(vec![el(Tag::Password, &[0])]).unwrap();
    assert_eq!(m.password.as_deref(), Some(""));
    assert_eq!(
        Message::AuthResponse(m).to_frame(1).elements,
        vec![el(Tag::Password, &[0])]
    );
}

#[test]
fn fixed_size_elements_require_exact_length() {
    let cases = [
        (Command::AuthResponse, Tag::Reason, 1),
        (Command::AuthResponse, Tag::Version, 1),
        (Command::AuthRequest, Tag::AuthType, 1),
        (Command::KeyGenerateRequest, Tag::KeyType, 1),
        (Command::KeyGenerateRequest, Tag::Curve, 1),
        (Command::KeyGenerateRequest, Tag::KeySize, 2),
        (Command::StoreCertificateRequest, Tag::CertificateType, 1),
        (Command::EndSession, Tag::Reason, 1),
    ];
    for (cmd, t, expected) in cases {
        for len in [0, expected - 1, expected + 1, expected + 2] {
            if len == expected {
                continue;
            }
            let err = Message::from_frame(&frame(cmd, vec![el(t, &vec![7; len])])).unwrap_err();
            assert_eq!(
                err,
                DecodeError::BadFixedLength {
                    tag: t,
                    len,
                    expected
                },
                "{} in {}",
                t.name(),
                cmd.name()
            );
            assert_eq!(err.kind(), "bad-fixed-length");
        }
    }
}

#[test]
fn string_rules() {
    for t in [Tag::DeviceName, Tag::Password] {
        let cases: [(&[u8], &str); 6] = [
            (b"", "empty-element"),
            (b"SEP1", "string-not-terminated"),
            (b"SEP1\0\0", "string-embedded-nul"),
            (b"SE\0P\0", "string-embedded-nul"),
            (b"SEP\x071\0", "string-not-printable"),
            (b"S\xc3\xa9P\0", "string-not-printable"),
        ];
        for (value, kind) in cases {
            assert_eq!(
                kind_of(Command::AuthResponse, vec![el(t, value)]),
                kind,
                "{} {value:?}",
                t.name()
            );
        }
    }
    // Space and tilde are the printable bounds.
    let m = auth_response(vec![el(Tag::DeviceName, b" ~\0")]).unwrap();
    assert_eq!(m.device_name.as_deref(), Some(" ~"));
}

#[test]
fn string_size_limits() {
    let name16 = b"SEP001122334455\0";
    assert!(auth_response(vec![el(Tag::DeviceName, name16)]).is_ok());
    let err = auth_response(vec![el(Tag::DeviceName, b"SEP0011223344556\0")]).unwrap_err();
    assert_eq!(
        err,
        DecodeError::ElementTooLong {
            tag: Tag::DeviceName,
            len: 17,
            max: 16
        }
    );
    assert_eq!(err.kind(), "element-too-long");

    assert!(auth_response(vec![el(Tag::Password, b"1234567890123456\0")]).is_ok());
    assert_eq!(
        kind_of(
            Command::AuthResponse,
            vec![el(Tag::Password, b"12345678901234567\0")]
        ),
        "element-too-long"
    );
}

#[test]
fn binary_element_limits() {
    let cases = [
        (Command::AuthResponse, Tag::SignedData, MAX_SIGNED_DATA),
        (Command::KeyGenerateResponse, Tag::PublicKey, MAX_PUBLIC_KEY),
    ];
    for (cmd, t, max) in cases {
        assert!(Message::from_frame(&frame(cmd, vec![el(t, &vec![1; max])])).is_ok());
        let err = Message::from_frame(&frame(cmd, vec![el(t, &vec![1; max + 1])])).unwrap_err();
        assert_eq!(
            err,
            DecodeError::ElementTooLong {
                tag: t,
                len: max + 1,
                max
            }
        );
        assert_eq!(
            Message::from_frame(&frame(cmd, vec![el(t, &[])])).unwrap_err(),
            DecodeError::EmptyElement { tag: t }
        );
    }
}

#[test]
fn duplicate_known_tag_is_rejected_even_when_not_interpreted() {
    let err = auth_response(vec![
        el(Tag::DeviceName, b"SEP001122334455\0"),
        el(Tag::DeviceName, b"SEP0A0B0C0D0E0F\0"),
    ])
    .unwrap_err();
    assert_eq!(
        err,
        DecodeError::DuplicateElement {
            tag: Tag::DeviceName
        }
    );
    assert_eq!(err.kind(), "duplicate-element");
    // KEY_SIZE means nothing in END_SESSION, but a repeat is still refused.
    assert_eq!(
        kind_of(
            Command::EndSession,
            vec![el(Tag::KeySize, &[8, 0]), el(Tag::KeySize, &[8, 0])]
        ),
        "duplicate-element"
    );
}

#[test]
fn unknown_tags_are_kept_in_order_even_repeated() {
    let f = frame(
        Command::AuthResponse,
        vec![
            el(Tag::Reason, &[1]),
            el(99, &[0xab, 0xcd]),
            el(Tag::Version, &[3]),
            el(99, &[]),
            el(14, &[1]),
        ],
    );
    let m = auth_response(f.elements.clone()).unwrap();
    assert_eq!(
        m.extra.unknown_tags().collect::<Vec<_>>(),
        vec![Tag::from(99), Tag::from(99), Tag::from(14)]
    );
    assert_eq!(m.reason, Some(Reason::UpdateCertificate));
    assert_eq!(m.version, Some(3));
    round_trips(&f);
}

#[test]
fn irrelevant_known_tags_are_kept_raw_and_not_unknown() {
    // KEY_SIZE of the wrong size inside an AUTH_RESPONSE: not interpreted, not checked.
    let f = frame(
        Command::AuthResponse,
        vec![el(Tag::Reason, &[1]), el(Tag::KeySize, &[1, 2, 3])],
    );
    let m = auth_response(f.elements.clone()).unwrap();
    assert_eq!(m.extra.elements(), &[el(Tag::KeySize, &[1, 2, 3])]);
    assert_eq!(m.extra.unknown_tags().count(), 0);
    round_trips(&f);
}

#[test]
fn non_ascending_order_is_preserved() {
    // Jabber order: VERSION, DEVICE_NAME, REASON.
    let f = frame(
        Command::AuthResponse,
        vec![
            el(Tag::Version, &[2]),
            el(Tag::DeviceName, b"CSF123\0"),
            el(Tag::Reason, &[1]),
        ],
    );
    let m = auth_response(f.elements.clone()).unwrap();
    assert!(!m.extra.is_empty());
    round_trips(&f);

    // A fresh message goes out in ascending order.
    let fresh = AuthResponse {
        extra: Extra::default(),
        ..m.clone()
    };
    let tags: Vec<Tag> = Message::AuthResponse(fresh)
        .to_frame(1)
        .elements
        .iter()
        .map(|e| e.tag)
        .collect();
    assert_eq!(tags, vec![Tag::Reason, Tag::Version, Tag::DeviceName]);

    // A field added after decoding is appended, the recorded order kept for the rest.
    let mut changed = m;
    changed.password = Some("1".into());
    changed.version = None;
    let tags: Vec<Tag> = Message::AuthResponse(changed)
        .to_frame(1)
        .elements
        .iter()
        .map(|e| e.tag)
        .collect();
    assert_eq!(tags, vec![Tag::DeviceName, Tag::Reason, Tag::Password]);
}

#[test]
fn certificate_element_layout() {
    let der = [0x30, 0x03, 0x02, 0x01, 0x05];
    let value = cert_entry(1, u8::from(CertType::Lsc), &der);
    assert_eq!(&value[..5], &[0x01, 0x00, 0x07, 0x00, 0x01]);
    let f = frame(
        Command::StoreCertificateRequest,
        vec![el(Tag::CertificateType, &[1]), el(Tag::Certificate, &value)],
    );
    let Message::StoreCertificateRequest(m) = Message::from_frame(&f).unwrap() else {
        panic!("wrong type");
    };
    assert_eq!(m, StoreCertificateRequest::new(CertType::Lsc, der.to_vec()));
    assert_eq!(m.certificate.as_ref().unwrap().first().der, der);
    round_trips(&f);
}

#[test]
fn certificate_element_with_several_entries_keeps_every_byte() {
    let value = [cert_entry(1, 1, b"first"), cert_entry(7, 2, b"second")].concat();
    let mut with_reserved = value.clone();
    with_reserved[3] = 0x42;
    let f = frame(
        Command::FetchCertificateResponse,
        vec![el(Tag::Reason, &[1]), el(Tag::Certificate, &with_reserved)],
    );
    let Message::FetchCertificateResponse(m) = Message::from_frame(&f).unwrap() else {
        panic!("wrong type");
    };
    let cert = m.certificate.unwrap();
    assert_eq!(cert.entries.len(), 2);
    assert_eq!(cert.first().der, b"first");
    assert_eq!(cert.first().reserved, 0x42);
    assert_eq!(cert.entries[1].marker, 7);
    assert_eq!(cert.entries[1].cert_type, CertType::Mic);
    round_trips(&f);
}

#[test]
fn certificate_element_errors() {
    let good = cert_entry(1, 1, b"der");
    let cases: Vec<(Vec<u8>, &str)> = vec![
        (vec![], "empty-element"),
        (good[..2].to_vec(), "bad-certificate-entry"),
        (good[..good.len() - 1].to_vec(), "bad-certificate-entry"),
        ([good.clone(), vec![1]].concat(), "bad-certificate-entry"),
        (vec![1, 0, 1, 0], "bad-certificate-entry"),
        (vec![1, 0, 2, 0, 1], "bad-certificate-entry"),
        (
            cert_entry(1, 1, &vec![0x30; MAX_CERTIFICATE]),
            "element-too-long",
        ),
    ];
    for (value, kind) in cases {
        assert_eq!(
            kind_of(
                Command::StoreCertificateRequest,
                vec![el(Tag::Certificate, &value)]
            ),
            kind,
            "{value:02x?}"
        );
    }
    assert!(CertificateElement { entries: vec![] }
        .first()
        .der
        .is_empty());
}

#[test]
fn sha2_signed_data() {
    for id in [HashId::Sha256, HashId::Sha512] {
        let value = [vec![u8::from(id), 0, 3], b"sig".to_vec()].concat();
        let m = auth_response(vec![el(Tag::Sha2SignedData, &value)]).unwrap();
        assert_eq!(
            m.sha2_signed_data,
            Some(Sha2SignedData {
                hash_id: id,
                signature: b"sig".to_vec()
            })
        );
        assert_eq!(
            Message::AuthResponse(m).to_frame(1).elements,
            vec![el(Tag::Sha2SignedData, &value)]
        );
    }
    let cases: Vec<(Vec<u8>, &str)> = vec![
        (vec![], "empty-element"),
        (vec![3, 0], "bad-sha2-signed-data"),
        (vec![1, 0, 1, 9], "bad-sha2-signed-data"),
        (vec![0, 0, 1, 9], "bad-sha2-signed-data"),
        (vec![3, 0, 2, 9], "bad-sha2-signed-data"),
        (vec![3, 0, 1, 9, 9], "bad-sha2-signed-data"),
        (vec![3, 0, 0], "bad-sha2-signed-data"),
        (
            [vec![3, 0x04, 0x01], vec![9; 1025]].concat(),
            "element-too-long",
        ),
    ];
    for (value, kind) in cases {
        assert_eq!(
            kind_of(Command::AuthResponse, vec![el(Tag::Sha2SignedData, &value)]),
            kind,
            "{value:02x?}"
        );
    }
}

#[test]
fn sudi_data() {
    for id in [HashId::Sha256, HashId::Sha512] {
        let value = sudi([0, 1, u8::from(id)]);
        let m = auth_response(vec![el(Tag::SudiData, &value)]).unwrap();
        assert_eq!(
            m.sudi,
            Some(SudiData {
                certificate: b"cert".to_vec(),
                sha1_signature: b"sig1".to_vec(),
                sha2_hash_id: id,
                sha2_signature: b"sig2".to_vec(),
            })
        );
        assert_eq!(
            Message::AuthResponse(m).to_frame(1).elements,
            vec![el(Tag::SudiData, &value)]
        );
    }
    let good = sudi([0, 1, 3]);
    let cases: Vec<(Vec<u8>, &str)> = vec![
        (vec![], "empty-element"),
        (block(0, b"cert"), "bad-sudi-data"),
        ([block(0, b"c"), block(1, b"s")].concat(), "bad-sudi-data"),
        (good[..good.len() - 1].to_vec(), "bad-sudi-data"),
        ([good.clone(), vec![0]].concat(), "bad-sudi-data"),
        (sudi([1, 1, 3]), "bad-sudi-data"),
        (sudi([0, 2, 3]), "bad-sudi-data"),
        (sudi([0, 1, 1]), "bad-sudi-data"),
        (sudi([0, 1, 4]), "bad-sudi-data"),
        (
            [block(0, b""), block(1, b"s"), block(3, b"s")].concat(),
            "bad-sudi-data",
        ),
        (
            [
                block(0, &vec![0x30; 10_000]),
                block(1, &[1; 1500]),
                block(3, &[1; 1000]),
            ]
            .concat(),
            "element-too-long",
        ),
    ];
    for (value, kind) in cases {
        assert_eq!(
            kind_of(Command::AuthResponse, vec![el(Tag::SudiData, &value)]),
            kind
        );
    }
}

#[test]
fn key_generate_request_for_each_key_spec() {
    let rsa = KeyGenerateRequest::for_key(KeySpec::Rsa(2048), 3).unwrap();
    assert_eq!(
        Message::KeyGenerateRequest(rsa.clone())
            .encode(0x1a2b_3c41)
            .unwrap(),
        // Flow 01, frame 3: KEY_SIZE=2048; KEY_TYPE=0.
        hex::decode("55031a2b3c4100090a0002080011000100").unwrap()
    );
    assert_eq!(rsa.key_spec(), Some(KeySpec::Rsa(2048)));
    for curve in [Curve::P256, Curve::P384, Curve::P521] {
        let ec = KeyGenerateRequest::for_key(KeySpec::Ec(curve), 3).unwrap();
        assert_eq!(ec.key_size, None);
        assert_eq!(ec.key_type, Some(KeyType::Ec));
        assert_eq!(ec.curve.and_then(CurveId::curve), Some(curve));
        assert_eq!(ec.key_spec(), Some(KeySpec::Ec(curve)));
    }
    let no_type = KeyGenerateRequest {
        key_size: Some(1024),
        ..Default::default()
    };
    assert_eq!(no_type.key_spec(), Some(KeySpec::Rsa(1024)));
    let bad_curve = KeyGenerateRequest {
        key_type: Some(KeyType::Ec),
        curve: Some(CurveId::from(9)),
        ..Default::default()
    };
    assert_eq!(bad_curve.key_spec(), None);
    let both = KeyGenerateRequest {
        key_size: Some(2048),
        key_type: Some(KeyType::Rsa),
        curve: Some(CurveId::P256),
        ..Default::default()
    };
    assert_eq!(both.key_spec(), None);
}

#[test]
fn older_clients_get_key_size_alone_and_never_ec() {
    for version in [1, 2] {
        let rsa = KeyGenerateRequest::for_key(KeySpec::Rsa(2048), version).unwrap();
        assert_eq!(
            Message::KeyGenerateRequest(rsa.clone())
                .encode(0x1a2b_3c41)
                .unwrap(),
            hex::decode("55031a2b3c4100050a00020800").unwrap()
        );
        assert_eq!(rsa.key_spec(), Some(KeySpec::Rsa(2048)));
        assert_eq!(
            KeyGenerateRequest::for_key(KeySpec::Ec(Curve::P256), version),
            None
        );
    }
}

#[test]
fn curve_values() {
    for curve in [Curve::P256, Curve::P384, Curve::P521] {
        assert_eq!(CurveId::from(curve).curve(), Some(curve));
    }
    assert_eq!(u8::from(CurveId::from(Curve::P256)), 0);
    assert_eq!(u8::from(CurveId::from(Curve::P521)), 2);
    assert_eq!(CurveId::from(3).curve(), None);
}

#[test]
fn commands_without_typed_view_stay_raw() {
    for cmd in [0, 5, 6, 7, 8, 16, 18, 19, 20, 21, 22, 23, 24, 255] {
        // Even elements that would be malformed in a typed view pass through untouched.
        let f = frame(
            cmd,
            vec![el(Tag::Reason, &[]), el(Tag::Reason, &[1, 2]), el(99, &[1])],
        );
        let m = Message::from_frame(&f).unwrap();
        assert_eq!(m, Message::Other(f.clone()));
        assert_eq!(m.command(), Command::from(cmd));
        assert_eq!(m.name(), Command::from(cmd).name());
        assert_eq!(m.to_frame(f.session_id), f);
    }
}

#[test]
fn empty_messages_and_reason_only() {
    for (cmd, message) in [
        (
            Command::FetchCertificateRequest,
            Message::FetchCertificateRequest(Empty::default()),
        ),
        (
            Command::DeleteCertificateRequest,
            Message::DeleteCertificateRequest(Empty::default()),
        ),
        (
            Command::RequestInProgress,
            Message::RequestInProgress(Empty::default()),
        ),
        (
            Command::EndSession,
            Message::EndSession(ReasonOnly::new(Reason::UnknownDevice)),
        ),
        (
            Command::StoreCertificateResponse,
            Message::StoreCertificateResponse(ReasonOnly::new(Reason::UpdateCertificate)),
        ),
        (
            Command::DeleteCertificateResponse,
            Message::DeleteCertificateResponse(ReasonOnly::new(Reason::InvalidElement)),
        ),
    ] {
        assert_eq!(message.command(), cmd);
        let bytes = message.encode(42).unwrap();
        assert_eq!(Message::decode(&bytes).unwrap(), (42, message));
    }
    assert_eq!(
        Message::EndSession(ReasonOnly::new(Reason::NoAction))
            .encode(0x1a2b_3c41)
            .unwrap(),
        [0x55, 0x0f, 0x1a, 0x2b, 0x3c, 0x41, 0x00, 0x04, 0x01, 0x00, 0x01, 0x00]
    );
}

#[test]
fn decode_reports_frame_errors_too() {
    assert_eq!(
        Message::decode(&[0x55]).unwrap_err().kind(),
        "truncated-header"
    );
    let bytes = [0x55, 0x0f, 0, 0, 0, 1, 0, 3, 0x01, 0x00, 0x00];
    assert_eq!(
        Message::decode(&bytes).unwrap_err().kind(),
        "bad-fixed-length"
    );
}

#[test]
fn auth_response_debug_hides_password() {
    let m = auth_response(vec![
        el(Tag::Password, b"987654\0"),
        el(Tag::DeviceName, b"SEP001122334455\0"),
        el(99, b"987654"),
    ])
    .unwrap();
    let text = format!("{m:?}");
    assert!(!text.contains("987654"), "{text}");
    assert!(text.contains("<redacted>"), "{text}");
    assert!(text.contains("SEP001122334455"), "{text}");
    let none = format!("{:?}", AuthResponse::default());
    assert!(none.contains("password: None"), "{none}");
}
