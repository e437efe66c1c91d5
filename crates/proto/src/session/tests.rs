//! Drives the state machine with the captured vectors and with hand-made sequences.

use super::*;
use crate::{
    CertType, CertificateElement, Command, CurveId, FetchCertificateResponse, KeyGenerateResponse,
    KeyType, ReasonOnly, HEADER_LEN,
};
use capf_model::keyspec::{Curve, KeySpec};
use std::future::Future;
use std::task::{Context, Poll, Waker};

#[path = "../../tests/common/vectors.rs"]
mod vectors;

use vectors::{Direction, VectorFile};

type TestSession = Session<(), ()>;

/// Runs a future whose every await is ready at once (the fakes below): one poll.
fn now<F: Future>(future: F) -> F::Output {
    let mut future = std::pin::pin!(future);
    match future
        .as_mut()
        .poll(&mut Context::from_waker(Waker::noop()))
    {
        Poll::Ready(output) => output,
        Poll::Pending => panic!("the fake service never waits"),
    }
}

fn issued(der: Vec<u8>) -> Issued<()> {
    Issued { der, record: () }
}

/// A service that answers from a script and remembers what it was asked.
#[derive(Default)]
struct Fake {
    verdict: Option<AuthVerdict<()>>,
    issued: Vec<u8>,
    /// The key each `issue` was asked for.
    keys: Vec<KeySpec>,
    finished: Vec<(bool, Outcome)>,
}

impl SessionService for Fake {
    type Claim = ();
    type Issued = ();

    async fn authenticate(&mut self, _attempt: &AuthAttempt) -> AuthVerdict<()> {
        self.verdict.take().unwrap_or(AuthVerdict::Unavailable)
    }

    async fn issue(
        &mut self,
        op: &mut Authorized<()>,
        _public_key: Vec<u8>,
    ) -> Result<Issued<()>, IssueFailure> {
        self.keys.push(op.plan().key);
        Ok(issued(self.issued.clone()))
    }

    async fn record_store(
        &mut self,
        _op: &mut Authorized<()>,
        _issued: &(),
        _stored: bool,
    ) -> Result<(), RecordFailure> {
        Ok(())
    }

    async fn record_fetch(
        &mut self,
        _op: &mut Authorized<()>,
        _certificate: Option<(CertType, Vec<u8>)>,
    ) -> Result<(), RecordFailure> {
        Ok(())
    }

    async fn record_delete(
        &mut self,
        _op: &mut Authorized<()>,
        _deleted: bool,
    ) -> Result<(), RecordFailure> {
        Ok(())
    }

    async fn finish(&mut self, op: Option<Authorized<()>>, outcome: Outcome) {
        self.finished.push((op.is_some(), outcome));
    }
}

fn split(frame: &[u8]) -> (Header, &[u8]) {
    let head: [u8; HEADER_LEN] = frame[..HEADER_LEN].try_into().unwrap();
    (Header::decode(&head).unwrap(), &frame[HEADER_LEN..])
}

fn session_id(file: &VectorFile) -> u32 {
    u32::from_str_radix(file.meta("session").unwrap(), 16).unwrap()
}

/// The decision a server configured as the vector says would reach.
fn decision_for(file: &VectorFile) -> AuthVerdict<()> {
    let outcome = file.meta("outcome").unwrap_or_default();
    let operation = file.meta("operation").unwrap_or_default();
    if outcome.contains("REASON 9") || outcome.contains("reason 9") {
        return AuthVerdict::UnknownDevice;
    }
    if file.name.contains("wrong-password") {
        return AuthVerdict::Refused;
    }
    if file.name.contains("no-pending") {
        return AuthVerdict::NoOperation;
    }
    let kind = if operation.starts_with("install") {
        OperationKind::Install
    } else if operation.starts_with("fetch") || operation.starts_with("troubleshoot") {
        OperationKind::Troubleshoot
    } else if operation.starts_with("delete") {
        OperationKind::Delete
    } else {
        panic!(
            "{}: cannot tell the operation from {operation:?}",
            file.name
        )
    };
    // The key the vector's server asked for.
    let key = file
        .frames
        .iter()
        .filter(|f| f.dir == Direction::ServerToClient)
        .filter_map(|f| match Message::decode(&f.bytes).unwrap().1 {
            Message::KeyGenerateRequest(r) => r.key_spec(),
            _ => None,
        })
        .next()
        .unwrap_or(KeySpec::Rsa(2048));
    AuthVerdict::Proceed {
        plan: Plan { kind, key },
        claim: (),
    }
}

fn decision_key(file: &VectorFile) -> Option<KeySpec> {
    match decision_for(file) {
        AuthVerdict::Proceed { plan, .. } => Some(plan.key),
        _ => None,
    }
}

/// The LSC the vector's server sent, to stand in for our own issuance.
fn issued_der(file: &VectorFile) -> Vec<u8> {
    file.frames
        .iter()
        .find_map(|f| match Message::decode(&f.bytes).unwrap().1 {
            Message::StoreCertificateRequest(r) => Some(r.certificate.unwrap().first().der.clone()),
            _ => None,
        })
        .unwrap_or_default()
}

/// Replays a flow: our server frames must equal the captured ones byte for byte.
fn replay(file: &VectorFile) {
    let mut session = TestSession::new(session_id(file));
    let mut service = Fake {
        verdict: Some(decision_for(file)),
        issued: issued_der(file),
        ..Fake::default()
    };
    let mut expected = file
        .frames
        .iter()
        .filter(|f| f.dir == Direction::ServerToClient)
        .map(|f| f.bytes.clone());
    let mut client = file
        .frames
        .iter()
        .filter(|f| f.dir == Direction::ClientToServer)
        .map(|f| f.bytes.clone());
    let mut step = session.start();
    loop {
        step = match step {
            Step::Send { frame, .. } => {
                assert_eq!(
                    Some(hex::encode(&frame)),
                    expected.next().map(hex::encode),
                    "{}",
                    file.name
                );
                let next = client.next().expect("client frame");
                let (h, b) = split(&next);
                session.on_frame(&h, b)
            }
            Step::Read(_) => {
                let next = client.next().expect("client frame");
                let (h, b) = split(&next);
                session.on_frame(&h, b)
            }
            Step::Do(effect) => {
                if let Effect::Authenticate(attempt) = &effect {
                    assert_eq!(Some(attempt.device_name.as_str()), file.meta("device"));
                }
                now(session.perform(effect, &mut service))
            }
            Step::End { frame, .. } => {
                assert_eq!(
                    frame.map(hex::encode),
                    expected.next().map(hex::encode),
                    "{}",
                    file.name
                );
                break;
            }
        };
    }
    now(session.finish(&mut service, Outcome::Internal));
    assert_eq!(service.finished.len(), 1);
    if let Some(key) = service.keys.first() {
        assert_eq!(Some(*key), decision_key(file), "{}", file.name);
    }
    assert!(expected.next().is_none(), "{}: frames left over", file.name);
    assert!(
        client.next().is_none(),
        "{}: client frames left over",
        file.name
    );
}

#[test]
fn every_captured_flow_replays_byte_for_byte() {
    let flows: Vec<_> = vectors::load_all()
        .into_iter()
        .filter(|f| f.meta("flow").is_some())
        .collect();
    assert!(flows.len() >= 10);
    for file in &flows {
        replay(file);
    }
}

#[test]
fn malformed_frames_are_classified() {
    let file = vectors::load("malformed-frames");
    let mut checked = 0;
    for case in &file.frames {
        let expect = case.expect.as_deref().unwrap();
        let mut session = TestSession::new(0x1a2b3c41);
        assert!(matches!(session.start(), Step::Send { .. }));
        let step = match case.bytes.get(..HEADER_LEN) {
            None => session.on_broken_stream("truncated-header"),
            Some(head) => match Header::decode(head.try_into().unwrap()) {
                Err(e) => session.on_broken_stream(e.kind()),
                Ok(h) if case.bytes.len() - HEADER_LEN < h.body_len as usize => {
                    session.on_broken_stream("truncated-frame")
                }
                Ok(h) => session.on_frame(&h, &case.bytes[HEADER_LEN..]),
            },
        };
        match (expect, step) {
            ("accept" | "accept-skip-unknown", Step::Do(Effect::Authenticate(_))) => {}
            ("reject:bad-device-name", Step::End { frame, outcome }) => {
                assert_eq!(outcome, Outcome::UnknownDevice);
                let (_, m) = Message::decode(&frame.unwrap()).unwrap();
                assert_eq!(
                    m,
                    Message::EndSession(ReasonOnly::new(Reason::UnknownDevice))
                );
            }
            (kind, Step::End { frame, outcome }) => {
                assert!(
                    matches!(outcome, Outcome::ProtocolError(_)),
                    "line {}",
                    case.line
                );
                assert_eq!(
                    kind.strip_prefix("reject:").unwrap(),
                    outcome.detail(),
                    "line {}",
                    case.line
                );
                // END_SESSION 7 only while the stream is in sync.
                let in_sync = !matches!(kind, "reject:protocol-id" | "reject:truncated-frame");
                assert_eq!(frame.is_some(), in_sync, "line {}", case.line);
                if let Some(frame) = frame {
                    let (_, m) = Message::decode(&frame).unwrap();
                    assert_eq!(
                        m,
                        Message::EndSession(ReasonOnly::new(Reason::InvalidElement))
                    );
                }
            }
            (expect, step) => panic!("line {}: expected {expect}, got {step:?}", case.line),
        }
        checked += 1;
    }
    assert!(checked >= 15);
}

const SID: u32 = 0x01020304;

fn frame(message: Message) -> (Header, Vec<u8>) {
    let bytes = message.encode(SID).unwrap();
    let (h, b) = split(&bytes);
    (h, b.to_vec())
}

fn feed(session: &mut TestSession, message: Message) -> Step {
    let (h, b) = frame(message);
    session.on_frame(&h, &b)
}

fn auth_response(version: u8) -> Message {
    Message::AuthResponse(AuthResponse {
        reason: Some(Reason::UpdateCertificate),
        version: Some(version),
        device_name: Some("SEP001122334455".into()),
        password: Some("123456".into()),
        ..Default::default()
    })
}

fn end_reason(step: &Step) -> Reason {
    match step {
        Step::End { frame: Some(f), .. } => match Message::decode(f).unwrap().1 {
            Message::EndSession(r) => r.reason.unwrap(),
            other => panic!("not END_SESSION: {other:?}"),
        },
        other => panic!("not an end: {other:?}"),
    }
}

/// A session authenticated for `plan`, having sent its first operation frame.
fn authenticated(plan: Plan, version: u8) -> (TestSession, Step) {
    let mut s = TestSession::new(SID);
    s.start();
    assert!(matches!(
        feed(&mut s, auth_response(version)),
        Step::Do(Effect::Authenticate(_))
    ));
    let step = s.resume(Resume::Auth(AuthVerdict::Proceed { plan, claim: () }));
    (s, step)
}

const INSTALL_RSA: Plan = Plan {
    kind: OperationKind::Install,
    key: KeySpec::Rsa(2048),
};

#[test]
fn request_in_progress_any_number_of_times_then_key() {
    let (mut s, step) = authenticated(INSTALL_RSA, 3);
    assert!(matches!(
        step,
        Step::Send {
            wait: Wait::KeyGeneration,
            ..
        }
    ));
    for _ in 0..3 {
        let step = feed(&mut s, Message::RequestInProgress(Empty::default()));
        assert_eq!(step, Step::Read(Wait::KeyGeneration));
    }
    let step = feed(
        &mut s,
        Message::KeyGenerateResponse(KeyGenerateResponse {
            public_key: Some(vec![1, 2, 3]),
            ..Default::default()
        }),
    );
    assert_eq!(
        step,
        Step::Do(Effect::Issue {
            public_key: vec![1, 2, 3],
        })
    );
    let step = s.resume(Resume::Issued(Ok(issued(vec![0x30, 0x00]))));
    assert!(matches!(
        step,
        Step::Send {
            wait: Wait::Frame,
            ..
        }
    ));
    let step = feed(
        &mut s,
        Message::StoreCertificateResponse(ReasonOnly::new(Reason::UpdateCertificate)),
    );
    assert_eq!(step, Step::Do(Effect::RecordStore { stored: true }));
    let step = s.resume(Resume::Recorded(Ok(())));
    assert_eq!(end_reason(&step), Reason::UpdateCertificate);
}

#[test]
fn failed_store_or_unrecorded_store_ends_with_7() {
    let run = |phone_reason: Reason, recorded: bool| {
        let (mut s, _) = authenticated(INSTALL_RSA, 3);
        feed(
            &mut s,
            Message::KeyGenerateResponse(KeyGenerateResponse {
                public_key: Some(vec![1]),
                ..Default::default()
            }),
        );
        s.resume(Resume::Issued(Ok(issued(vec![0x30, 0x00]))));
        feed(
            &mut s,
            Message::StoreCertificateResponse(ReasonOnly::new(phone_reason)),
        );
        s.resume(Resume::Recorded(if recorded {
            Ok(())
        } else {
            Err(RecordFailure::Unavailable)
        }))
    };
    assert_eq!(
        end_reason(&run(Reason::InvalidElement, true)),
        Reason::InvalidElement
    );
    assert_eq!(
        end_reason(&run(Reason::UpdateCertificate, false)),
        Reason::InvalidElement
    );
    assert!(matches!(
        run(Reason::InvalidElement, true),
        Step::End {
            outcome: Outcome::StoreFailed,
            ..
        }
    ));
}

#[test]
fn key_generation_failure_and_wrong_key_end_with_7() {
    let (mut s, _) = authenticated(INSTALL_RSA, 3);
    let step = feed(
        &mut s,
        Message::KeyGenerateResponse(KeyGenerateResponse {
            reason: Some(Reason::InvalidElement),
            ..Default::default()
        }),
    );
    assert_eq!(end_reason(&step), Reason::InvalidElement);
    assert!(matches!(
        step,
        Step::End {
            outcome: Outcome::KeyGenerationFailed,
            ..
        }
    ));

    let (mut s, _) = authenticated(INSTALL_RSA, 3);
    feed(
        &mut s,
        Message::KeyGenerateResponse(KeyGenerateResponse {
            public_key: Some(vec![1]),
            ..Default::default()
        }),
    );
    let step = s.resume(Resume::Issued(Err(IssueFailure::WrongKey)));
    assert!(matches!(
        step,
        Step::End {
            outcome: Outcome::WrongKey,
            ..
        }
    ));
}

#[test]
fn older_clients_get_key_size_alone_and_never_ec() {
    let (_, step) = authenticated(INSTALL_RSA, 2);
    let Step::Send { frame, .. } = step else {
        panic!("{step:?}")
    };
    let Message::KeyGenerateRequest(r) = Message::decode(&frame).unwrap().1 else {
        panic!()
    };
    assert_eq!((r.key_size, r.key_type, r.curve), (Some(2048), None, None));

    let ec = Plan {
        kind: OperationKind::Install,
        key: KeySpec::Ec(Curve::P384),
    };
    let (_, step) = authenticated(ec, 2);
    assert_eq!(end_reason(&step), Reason::InvalidElement);
    let (_, step) = authenticated(ec, 3);
    let Step::Send { frame, .. } = step else {
        panic!("{step:?}")
    };
    let Message::KeyGenerateRequest(r) = Message::decode(&frame).unwrap().1 else {
        panic!()
    };
    assert_eq!(
        (r.key_size, r.key_type, r.curve),
        (None, Some(KeyType::Ec), Some(CurveId::P384))
    );
}

#[test]
fn fetch_without_certificate_ends_with_0_and_with_certificate_records_it() {
    let plan = Plan {
        kind: OperationKind::Troubleshoot,
        key: KeySpec::Rsa(2048),
    };
    let (mut s, _) = authenticated(plan, 3);
    let step = feed(
        &mut s,
        Message::FetchCertificateResponse(FetchCertificateResponse {
            reason: Some(Reason::InvalidElement),
            ..Default::default()
        }),
    );
    assert_eq!(step, Step::Do(Effect::RecordFetch { certificate: None }));
    assert_eq!(
        end_reason(&s.resume(Resume::Recorded(Ok(())))),
        Reason::NoAction
    );

    let (mut s, _) = authenticated(plan, 3);
    let step = feed(
        &mut s,
        Message::FetchCertificateResponse(FetchCertificateResponse {
            reason: Some(Reason::UpdateCertificate),
            certificate: Some(CertificateElement::single(CertType::Lsc, vec![0x30, 0])),
            ..Default::default()
        }),
    );
    assert_eq!(
        step,
        Step::Do(Effect::RecordFetch {
            certificate: Some((CertType::Lsc, vec![0x30, 0]))
        })
    );
    // Reason 1 without the certificate is malformed.
    let (mut s, _) = authenticated(plan, 3);
    let step = feed(
        &mut s,
        Message::FetchCertificateResponse(FetchCertificateResponse {
            reason: Some(Reason::UpdateCertificate),
            ..Default::default()
        }),
    );
    assert_eq!(end_reason(&step), Reason::InvalidElement);
}

/// Finding 9 of the hardening: a fetch or delete answer without a REASON, or with one the
/// protocol does not define, is malformed (END_SESSION 7, nothing recorded), never "done".
#[test]
fn fetch_and_delete_answers_need_a_known_reason() {
    for (kind, reason, expected) in [
        (OperationKind::Delete, None, "missing-reason"),
        (
            OperationKind::Delete,
            Some(Reason::Unknown(0x42)),
            "unknown-reason",
        ),
        (OperationKind::Troubleshoot, None, "missing-reason"),
        (
            OperationKind::Troubleshoot,
            Some(Reason::Unknown(0x42)),
            "unknown-reason",
        ),
    ] {
        let plan = Plan {
            kind,
            key: KeySpec::Rsa(2048),
        };
        let (mut s, _) = authenticated(plan, 3);
        let answer = match kind {
            OperationKind::Delete => Message::DeleteCertificateResponse(ReasonOnly {
                reason,
                ..Default::default()
            }),
            _ => Message::FetchCertificateResponse(FetchCertificateResponse {
                reason,
                certificate: Some(CertificateElement::single(CertType::Lsc, vec![0x30, 0])),
                ..Default::default()
            }),
        };
        let step = feed(&mut s, answer);
        assert_eq!(
            end_reason(&step),
            Reason::InvalidElement,
            "{kind:?} {reason:?}"
        );
        assert!(
            matches!(&step, Step::End { outcome: Outcome::ProtocolError(k), .. } if *k == expected),
            "{kind:?} {reason:?}: {step:?}"
        );
    }
    // A known REASON other than 1 is an answer: nothing to delete, recorded as such.
    let plan = Plan {
        kind: OperationKind::Delete,
        key: KeySpec::Rsa(2048),
    };
    let (mut s, _) = authenticated(plan, 3);
    let step = feed(
        &mut s,
        Message::DeleteCertificateResponse(ReasonOnly::new(Reason::InvalidElement)),
    );
    assert_eq!(step, Step::Do(Effect::RecordDelete { deleted: false }));
}

#[test]
fn unexpected_commands_in_every_state_end_with_7() {
    // Before authentication.
    let mut s = TestSession::new(SID);
    s.start();
    let step = feed(&mut s, Message::RequestInProgress(Empty::default()));
    assert_eq!(end_reason(&step), Reason::InvalidElement);

    // REQUEST_IN_PROGRESS is only welcome while a key is generated.
    let plan = Plan {
        kind: OperationKind::Delete,
        key: KeySpec::Rsa(2048),
    };
    let (mut s, _) = authenticated(plan, 3);
    let step = feed(&mut s, Message::RequestInProgress(Empty::default()));
    assert_eq!(end_reason(&step), Reason::InvalidElement);

    // Commands known only by number.
    let (mut s, _) = authenticated(INSTALL_RSA, 3);
    let other = Frame {
        command: Command::StatusRequest,
        session_id: SID,
        elements: vec![],
    };
    let bytes = other.encode().unwrap();
    let (h, b) = split(&bytes);
    assert_eq!(end_reason(&s.on_frame(&h, b)), Reason::InvalidElement);

    // A second AUTH_RESPONSE while waiting for the key.
    let (mut s, _) = authenticated(INSTALL_RSA, 3);
    assert_eq!(
        end_reason(&feed(&mut s, auth_response(3))),
        Reason::InvalidElement
    );
}

#[test]
fn performing_an_effect_of_another_state_ends_cleanly() {
    let mut s = TestSession::new(SID);
    s.start();
    feed(&mut s, auth_response(3));
    // The session waits for authentication; a driver asking to issue is refused.
    let mut service = Fake::default();
    let step = now(s.perform(
        Effect::Issue {
            public_key: vec![1],
        },
        &mut service,
    ));
    assert!(matches!(
        step,
        Step::End {
            outcome: Outcome::Internal,
            ..
        }
    ));
    assert!(service.keys.is_empty(), "issued without authentication");
    now(s.finish(&mut service, Outcome::Internal));
    assert_eq!(service.finished, vec![(false, Outcome::Internal)]);
}

#[test]
fn finish_hands_the_operation_back_however_the_session_ended() {
    // Authenticated, then the stream broke while the phone generated its key.
    let (mut s, _) = authenticated(INSTALL_RSA, 3);
    let step = s.on_broken_stream(TIMEOUT);
    assert!(matches!(
        step,
        Step::End {
            outcome: Outcome::KeyGenerationTimeout,
            frame: None
        }
    ));
    let mut service = Fake::default();
    now(s.finish(&mut service, Outcome::KeyGenerationTimeout));
    assert_eq!(
        service.finished,
        vec![(true, Outcome::KeyGenerationTimeout)]
    );

    // Abandoned by the driver mid-store (a failed write): the operation is still there.
    let (mut s, _) = authenticated(INSTALL_RSA, 3);
    feed(
        &mut s,
        Message::KeyGenerateResponse(KeyGenerateResponse {
            public_key: Some(vec![1]),
            ..Default::default()
        }),
    );
    s.resume(Resume::Issued(Ok(issued(vec![0x30, 0x00]))));
    let mut service = Fake::default();
    now(s.finish(&mut service, Outcome::ProtocolError("write-failed")));
    assert_eq!(
        service.finished,
        vec![(true, Outcome::ProtocolError("write-failed"))]
    );
}

#[test]
fn resuming_with_the_wrong_result_ends_cleanly() {
    let mut s = TestSession::new(SID);
    s.start();
    feed(&mut s, auth_response(3));
    let step = s.resume(Resume::Recorded(Ok(())));
    assert!(matches!(
        step,
        Step::End {
            outcome: Outcome::Internal,
            ..
        }
    ));
}

#[test]
fn decisions_map_to_reasons() {
    for (decision, expected) in [
        (AuthVerdict::UnknownDevice, Reason::UnknownDevice),
        (AuthVerdict::Refused, Reason::InvalidElement),
        (AuthVerdict::NoOperation, Reason::NoAction),
    ] {
        let mut s = TestSession::new(SID);
        s.start();
        feed(&mut s, auth_response(3));
        assert_eq!(end_reason(&s.resume(Resume::Auth(decision))), expected);
    }
}
