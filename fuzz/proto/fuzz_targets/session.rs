//! The session state machine fed an arbitrary sequence of phone frames and effect results.
//!
//! The fuzz input drives both sides the machine talks to: the phone (well-formed messages of
//! every command, with the right session id most of the time, raw bytes, broken streams) and
//! the service (the results of authentication, issuing and recording, played by a fake
//! `SessionService`; sometimes the driver hands back an effect of another state). Well-formed
//! messages are built rather than hoped for, so the fuzzer reaches the key-generation wait,
//! the store, fetch and delete exchanges and their endings.
//!
//! Checked on every step: no panic; every step either ends the session, sends a frame or asks
//! for the next one, or asks for an effect; every frame the server sends decodes, carries the
//! session id and is a server command; certificates are only asked for after a `Proceed`,
//! for the planned key; the certificate sent is the one issued; an install only counts once
//! the phone said it stored it and that was recorded; and an ended session stays ended.
#![no_main]

use capf_model::keyspec::{Curve, KeySpec};
use capf_proto::{
    AuthResponse, CertType, CertificateElement, Command, Element, Empty, FetchCertificateResponse,
    Frame, HashId, Header, KeyGenerateResponse, Message, Reason, ReasonOnly, Sha2SignedData,
    SudiData, Tag, HEADER_LEN,
};
use capf_proto::session::{
    AuthAttempt, AuthVerdict, Authorized, Effect, IssueFailure, Issued, Outcome, Plan,
    RecordFailure, Session, SessionService, Step, Wait, TIMEOUT,
};
use std::future::Future;
use std::task::{Context, Poll, Waker};
use capf_model::operation::OperationKind;
use libfuzzer_sys::arbitrary::{Result, Unstructured};
use libfuzzer_sys::fuzz_target;

/// Steps per input; the machine needs about ten for a whole install.
const MAX_STEPS: usize = 64;
/// Largest DER the fake signer returns: what fits the CERTIFICATE element's 8 KiB limit.
const MAX_ISSUED: usize = 8 * 1024 - 5;

fuzz_target!(|data: &[u8]| {
    let mut u = Unstructured::new(data);
    // Running out of input is how a run ends early; it is not a finding.
    let _ = drive(&mut u);
});

/// What the harness told the machine so far, to check its requests against.
#[derive(Default)]
struct Seen {
    plan: Option<Plan>,
    issued: Option<Vec<u8>>,
    sent_certificate: bool,
    store_asked: Option<bool>,
    recorded: Option<bool>,
    key_requested: bool,
}

fn drive(u: &mut Unstructured<'_>) -> Result<()> {
    let id = session_id(u)?;
    let mut session = Session::<(), ()>::new(id);
    let mut seen = Seen::default();
    let mut step = session.start();
    for _ in 0..MAX_STEPS {
        step = match step {
            Step::Send { frame, wait } => {
                check_sent(&frame, id, wait, &mut seen);
                next_frame(u, &mut session, id)?
            }
            Step::Read(wait) => {
                assert_eq!(wait, Wait::KeyGeneration, "only the key wait reads again");
                assert!(seen.key_requested);
                next_frame(u, &mut session, id)?
            }
            Step::Do(effect) => {
                let mut service = Scripted::draw(u, &effect, &mut seen)?;
                // Now and then the driver hands back an effect of another state; the session
                // must end cleanly, and not act on it.
                let effect = if u.ratio(1u8, 32)? {
                    Effect::Issue {
                        public_key: vec![1],
                    }
                } else {
                    effect
                };
                let step = now(session.perform(effect, &mut service));
                if let Some(stored) = service.store_asked {
                    seen.store_asked = Some(stored);
                    seen.recorded = Some(service.record.is_ok());
                }
                if let Some(issued) = service.issued_der {
                    seen.issued = Some(issued);
                }
                step
            }
            Step::End { frame, outcome } => {
                check_end(frame.as_deref(), id, outcome, &seen);
                // An ended session ignores whatever still arrives.
                let after = next_frame(u, &mut session, id)?;
                assert!(matches!(after, Step::End { .. }), "{after:?} after the end");
                let mut service = Scripted::default();
                let after = now(session.perform(
                    Effect::RecordDelete { deleted: true },
                    &mut service,
                ));
                assert!(matches!(after, Step::End { .. }), "{after:?} after the end");
                assert!(!service.called, "the service was asked after the end");
                return Ok(());
            }
        };
    }
    Ok(())
}

/// Runs a future that never waits (the scripted service answers at once): one poll.
fn now<F: Future>(future: F) -> F::Output {
    let mut future = std::pin::pin!(future);
    match future.as_mut().poll(&mut Context::from_waker(Waker::noop())) {
        Poll::Ready(output) => output,
        Poll::Pending => panic!("the scripted service never waits"),
    }
}

fn session_id(u: &mut Unstructured<'_>) -> Result<u32> {
    u.arbitrary()
}

fn check_sent(frame: &[u8], id: u32, wait: Wait, seen: &mut Seen) {
    let (sid, message) = Message::decode(frame).expect("the server's frame decodes");
    assert_eq!(sid, id);
    assert!(message.command().is_sent_by_server(), "{}", message.name());
    match &message {
        Message::KeyGenerateRequest(request) => {
            let plan = seen.plan.expect("KEY_GENERATE_REQUEST without Proceed");
            assert_eq!(plan.kind, OperationKind::Install);
            assert_eq!(request.key_spec(), Some(plan.key));
            assert_eq!(wait, Wait::KeyGeneration);
            seen.key_requested = true;
        }
        Message::StoreCertificateRequest(request) => {
            let issued = seen.issued.as_ref().expect("STORE_CERTIFICATE_REQUEST before issuing");
            let element = request.certificate.as_ref().expect("certificate element");
            assert_eq!(&element.first().der, issued, "sent something else than issued");
            assert_eq!(wait, Wait::Frame);
            seen.sent_certificate = true;
        }
        Message::FetchCertificateRequest(_) => {
            let plan = seen.plan.expect("FETCH_CERTIFICATE_REQUEST without Proceed");
            assert_eq!(plan.kind, OperationKind::Troubleshoot);
        }
        Message::DeleteCertificateRequest(_) => {
            let plan = seen.plan.expect("DELETE_CERTIFICATE_REQUEST without Proceed");
            assert_eq!(plan.kind, OperationKind::Delete);
        }
        Message::AuthRequest(_) => assert!(seen.plan.is_none()),
        other => panic!("server sent {}", other.name()),
    }
}

fn check_end(frame: Option<&[u8]>, id: u32, outcome: Outcome, seen: &Seen) {
    if let Some(frame) = frame {
        match Message::decode(frame).expect("END_SESSION decodes") {
            (sid, Message::EndSession(end)) => {
                assert_eq!(sid, id);
                assert!(end.reason.is_some());
            }
            (_, other) => panic!("ended with {}", other.name()),
        }
    }
    match outcome {
        Outcome::Installed => {
            assert!(seen.sent_certificate, "installed without sending a certificate");
            assert_eq!(seen.store_asked, Some(true), "installed without the phone's yes");
            assert_eq!(seen.recorded, Some(true), "installed without a durable record");
        }
        Outcome::Fetched | Outcome::Deleted | Outcome::DeleteFailed => {
            assert!(seen.plan.is_some(), "{outcome:?} without Proceed");
        }
        _ => {}
    }
    let _ = (outcome.as_str(), outcome.detail());
}

/// The next thing the phone does: a frame (built or raw) or a broken stream.
fn next_frame(u: &mut Unstructured<'_>, session: &mut Session<(), ()>, id: u32) -> Result<Step> {
    let bytes = match u.int_in_range(0u8..=15)? {
        0 => return Ok(session.on_broken_stream(TIMEOUT)),
        1 => return Ok(session.on_broken_stream("truncated-header")),
        2 | 3 => {
            // Raw bytes, read the way the connection task reads them.
            let mut raw: Vec<u8> = u.arbitrary()?;
            if raw.len() >= 6 && u.arbitrary()? {
                raw[2..6].copy_from_slice(&id.to_be_bytes());
            }
            raw
        }
        _ => {
            let message = phone_message(u)?;
            let sid = if u.ratio(1u8, 16)? { u.arbitrary()? } else { id };
            match message.encode(sid) {
                Ok(bytes) => bytes,
                // Too long for a frame: a phone could not send it.
                Err(_) => return Ok(session.on_broken_stream(TIMEOUT)),
            }
        }
    };
    let Some((head, rest)) = bytes.split_first_chunk::<HEADER_LEN>() else {
        return Ok(session.on_broken_stream("truncated-header"));
    };
    let header = match Header::decode(head) {
        Ok(header) => header,
        Err(e) => return Ok(session.on_broken_stream(e.kind())),
    };
    match rest.get(..usize::from(header.body_len)) {
        Some(body) => Ok(session.on_frame(&header, body)),
        None => Ok(session.on_broken_stream("truncated-frame")),
    }
}

fn device_name(u: &mut Unstructured<'_>) -> Result<Option<String>> {
    Ok(match u.int_in_range(0u8..=4)? {
        0 => None,
        1 => Some("SEP001122334455".into()),
        2 => Some("CSFJSMITH".into()),
        3 => Some("SEP00112233445".into()),
        _ => Some(u.arbitrary()?),
    })
}

fn certificate(u: &mut Unstructured<'_>) -> Result<Option<CertificateElement>> {
    if !u.arbitrary()? {
        return Ok(None);
    }
    let cert_type = CertType::from(u.arbitrary::<u8>()?);
    let der: Vec<u8> = u.arbitrary()?;
    let mut element = CertificateElement::single(cert_type, der);
    if u.ratio(1u8, 8)? {
        let mut more =
            CertificateElement::single(CertType::from(u.arbitrary::<u8>()?), u.arbitrary()?);
        element.entries.append(&mut more.entries);
    }
    Ok(Some(element))
}

fn reason_value(u: &mut Unstructured<'_>) -> Result<Option<Reason>> {
    Ok(match u.int_in_range(0u8..=4)? {
        0 => None,
        1 | 2 => Some(Reason::UpdateCertificate),
        3 => Some(Reason::InvalidElement),
        _ => Some(Reason::from(u.arbitrary::<u8>()?)),
    })
}

/// A well-formed message of any command a phone might send (and some it should not).
fn phone_message(u: &mut Unstructured<'_>) -> Result<Message> {
    Ok(match u.int_in_range(0u8..=9)? {
        0..=2 => Message::AuthResponse(AuthResponse {
            reason: reason_value(u)?,
            version: if u.ratio(7u8, 8)? {
                Some(u.int_in_range(1..=3)?)
            } else {
                u.arbitrary()?
            },
            device_name: device_name(u)?,
            password: u.arbitrary()?,
            certificate: certificate(u)?,
            signed_data: u.arbitrary()?,
            sha2_signed_data: if u.arbitrary()? {
                Some(Sha2SignedData {
                    hash_id: HashId::from(u.arbitrary::<u8>()?),
                    signature: u.arbitrary()?,
                })
            } else {
                None
            },
            sudi: if u.ratio(1u8, 8)? {
                Some(SudiData {
                    certificate: u.arbitrary()?,
                    sha1_signature: u.arbitrary()?,
                    sha2_hash_id: HashId::from(u.arbitrary::<u8>()?),
                    sha2_signature: u.arbitrary()?,
                })
            } else {
                None
            },
            ..AuthResponse::default()
        }),
        3 => Message::RequestInProgress(Empty::default()),
        4 => Message::KeyGenerateResponse(KeyGenerateResponse {
            public_key: u.arbitrary()?,
            reason: reason_value(u)?,
            ..KeyGenerateResponse::default()
        }),
        5 => Message::StoreCertificateResponse(ReasonOnly {
            reason: reason_value(u)?,
            ..ReasonOnly::default()
        }),
        6 => Message::FetchCertificateResponse(FetchCertificateResponse {
            reason: reason_value(u)?,
            certificate: certificate(u)?,
            ..FetchCertificateResponse::default()
        }),
        7 => Message::DeleteCertificateResponse(ReasonOnly {
            reason: reason_value(u)?,
            ..ReasonOnly::default()
        }),
        8 => Message::EndSession(ReasonOnly {
            reason: reason_value(u)?,
            ..ReasonOnly::default()
        }),
        _ => {
            let elements: Vec<(u8, Vec<u8>)> = u.arbitrary()?;
            Message::Other(Frame {
                command: if u.arbitrary()? {
                    Command::StatusRequest
                } else {
                    Command::from(u.arbitrary::<u8>()?)
                },
                session_id: 0,
                elements: elements
                    .into_iter()
                    .map(|(tag, value)| Element::new(Tag::from(tag), value))
                    .collect(),
            })
        }
    })
}

fn key_spec(u: &mut Unstructured<'_>) -> Result<KeySpec> {
    Ok(match u.int_in_range(0u8..=6)? {
        0 => KeySpec::Rsa(2048),
        1 => KeySpec::Rsa(u.arbitrary()?),
        2 | 3 => KeySpec::Ec(Curve::P256),
        4 => KeySpec::Ec(Curve::P384),
        5 => KeySpec::Ec(Curve::P521),
        _ => KeySpec::Rsa(1024),
    })
}

/// The fake authenticator, signer and store: answers drawn before the effect runs, checks
/// of what the session asks.
struct Scripted {
    verdict: Option<AuthVerdict<()>>,
    issue: Result<Vec<u8>, IssueFailure>,
    record: Result<(), RecordFailure>,
    plan: Option<Plan>,
    key_requested: bool,
    sent_certificate: bool,
    /// What happened, for `Seen`.
    called: bool,
    issued_der: Option<Vec<u8>>,
    store_asked: Option<bool>,
}

impl Default for Scripted {
    fn default() -> Self {
        Scripted {
            verdict: None,
            issue: Err(IssueFailure::Internal),
            record: Err(RecordFailure::Unavailable),
            plan: None,
            key_requested: false,
            sent_certificate: false,
            called: false,
            issued_der: None,
            store_asked: None,
        }
    }
}

impl Scripted {
    /// Mostly the answer the effect asked for.
    fn draw(u: &mut Unstructured<'_>, effect: &Effect, seen: &mut Seen) -> Result<Scripted> {
        let mut script = Scripted {
            plan: seen.plan,
            key_requested: seen.key_requested,
            sent_certificate: seen.sent_certificate,
            ..Scripted::default()
        };
        match effect {
            Effect::Authenticate(attempt) => {
                let _ = (attempt.device_name.as_str(), attempt.version);
                script.verdict = Some(match u.int_in_range(0u8..=7)? {
                    0 => AuthVerdict::UnknownDevice,
                    1 => AuthVerdict::Refused,
                    2 => AuthVerdict::NoOperation,
                    3 => AuthVerdict::Unavailable,
                    n => {
                        let kind = match n {
                            4 | 5 => OperationKind::Install,
                            6 => OperationKind::Troubleshoot,
                            _ => OperationKind::Delete,
                        };
                        let plan = Plan {
                            kind,
                            key: key_spec(u)?,
                        };
                        seen.plan = Some(plan);
                        AuthVerdict::Proceed { plan, claim: () }
                    }
                });
            }
            Effect::Issue { public_key } => {
                let _ = public_key.len();
                script.issue = match u.int_in_range(0u8..=5)? {
                    0 => Err(IssueFailure::WrongKey),
                    1 => Err(IssueFailure::Internal),
                    2 if u.ratio(1u8, 4)? => Err(IssueFailure::ClaimLost),
                    _ => Ok(if u.ratio(1u8, 64)? {
                        // Larger than any frame: the machine must not send it.
                        vec![0x30; 70_000]
                    } else {
                        // What a signer can produce: a non-empty DER within the receiver's
                        // 8 KiB certificate limit (real LSCs are about 1 KiB).
                        let mut der: Vec<u8> = u.arbitrary()?;
                        der.truncate(MAX_ISSUED);
                        if der.is_empty() {
                            der.push(0x30);
                        }
                        der
                    }),
                };
            }
            Effect::RecordStore { .. }
            | Effect::RecordFetch { .. }
            | Effect::RecordDelete { .. } => {
                script.record = match u.int_in_range(0u8..=4)? {
                    0 => Err(RecordFailure::Unavailable),
                    1 => Err(RecordFailure::ClaimLost),
                    _ => Ok(()),
                };
            }
        }
        Ok(script)
    }
}

impl SessionService for Scripted {
    type Claim = ();
    type Issued = ();

    async fn authenticate(&mut self, _attempt: &AuthAttempt) -> AuthVerdict<()> {
        self.called = true;
        self.verdict.take().expect("authenticate not scripted")
    }

    async fn issue(
        &mut self,
        op: &mut Authorized<()>,
        _public_key: Vec<u8>,
    ) -> Result<Issued<()>, IssueFailure> {
        self.called = true;
        let plan = self.plan.expect("Issue without Proceed");
        assert_eq!(plan.kind, OperationKind::Install);
        assert_eq!(op.plan(), plan, "asked to issue for another plan");
        assert!(self.key_requested);
        let der = self.issue.clone()?;
        self.issued_der = Some(der.clone());
        Ok(Issued { der, record: () })
    }

    async fn record_store(
        &mut self,
        op: &mut Authorized<()>,
        _issued: &(),
        stored: bool,
    ) -> Result<(), RecordFailure> {
        self.called = true;
        assert!(self.sent_certificate, "store recorded before sending one");
        assert_eq!(op.plan().kind, OperationKind::Install);
        self.store_asked = Some(stored);
        self.record
    }

    async fn record_fetch(
        &mut self,
        op: &mut Authorized<()>,
        certificate: Option<(CertType, Vec<u8>)>,
    ) -> Result<(), RecordFailure> {
        self.called = true;
        assert_eq!(op.plan().kind, OperationKind::Troubleshoot);
        let _ = certificate.as_ref().map(|(t, der)| (t, der.len()));
        self.record
    }

    async fn record_delete(
        &mut self,
        op: &mut Authorized<()>,
        _deleted: bool,
    ) -> Result<(), RecordFailure> {
        self.called = true;
        assert_eq!(op.plan().kind, OperationKind::Delete);
        self.record
    }

    async fn finish(&mut self, _op: Option<Authorized<()>>, _outcome: Outcome) {
        self.called = true;
    }
}
