//! The CAPF session state machine (spec 4.10), free of I/O.
//!
//! A connection task feeds it frames and the results of the work it asked for
//! (authentication, issuing, recording) and does what each [`Step`] says. It never touches
//! sockets, clocks or the database, so every path, failures included, is a plain unit test.
//!
//! The work itself is the server's: [`Session::perform`] asks a [`SessionService`] and feeds
//! the typed answer back into the machine. Once the service's verdict is
//! [`AuthVerdict::Proceed`], the session holds an [`Authorized`] in every later state, and it
//! is the only way to reach the service's issuing and recording methods (see [`Authorized`]).

use crate::{
    AuthRequest, AuthResponse, AuthType, CertType, DecodeError, Empty, Frame, Header,
    KeyGenerateRequest, Message, Reason, ReasonOnly, StoreCertificateRequest, PROTOCOL_VERSION,
};
use capf_model::device::DeviceName;
use capf_model::operation::OperationKind;

mod seam;

#[cfg(test)]
mod tests;

pub use seam::{
    AuthAttempt, AuthVerdict, Authorized, IssueFailure, Issued, Plan, RecordFailure, SessionService,
};

/// Oldest and newest VERSION element values accepted from a phone (Jabber sends 2).
const MIN_VERSION: u8 = 1;
const MAX_VERSION: u8 = PROTOCOL_VERSION;

/// Work the connection task must have done before the session can go on: it hands the
/// effect back to [`Session::perform`], which asks the [`SessionService`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Effect {
    Authenticate(Box<AuthAttempt>),
    /// Check the phone's key against the plan and issue a certificate for it.
    Issue {
        public_key: Vec<u8>,
    },
    /// The phone answered STORE_CERTIFICATE_REQUEST.
    RecordStore {
        stored: bool,
    },
    /// The phone answered FETCH_CERTIFICATE_REQUEST (certificate type and DER if it had one).
    RecordFetch {
        certificate: Option<(CertType, Vec<u8>)>,
    },
    /// The phone answered DELETE_CERTIFICATE_REQUEST.
    RecordDelete {
        deleted: bool,
    },
}

impl Effect {
    /// For logs.
    pub fn name(&self) -> &'static str {
        match self {
            Effect::Authenticate(_) => "authenticate",
            Effect::Issue { .. } => "issue",
            Effect::RecordStore { .. } => "record store",
            Effect::RecordFetch { .. } => "record fetch",
            Effect::RecordDelete { .. } => "record delete",
        }
    }
}

/// What the service answered, as the state machine consumes it.
#[derive(Debug)]
enum Resume<C, R> {
    Auth(AuthVerdict<C>),
    Issued(Result<Issued<R>, IssueFailure>),
    Recorded(Result<(), RecordFailure>),
}

/// The `kind` the connection task passes to [`Session::on_broken_stream`] when a deadline
/// passed.
pub const TIMEOUT: &str = "timeout";

/// How long the connection task may wait for the next frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Wait {
    /// The short per-frame deadline.
    Frame,
    /// The phone is generating a key: the key-generation deadline applies.
    KeyGeneration,
}

/// How a session ended, for the attempt history, logs and metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Installed,
    Fetched,
    Deleted,
    NoOperation,
    UnknownDevice,
    AuthRefused,
    ProtocolError(&'static str),
    KeyGenerationFailed,
    /// The key-generation wait ran out.
    KeyGenerationTimeout,
    WrongKey,
    StoreFailed,
    DeleteFailed,
    Internal,
}

impl Outcome {
    pub fn as_str(&self) -> &'static str {
        match self {
            Outcome::Installed => "installed",
            Outcome::Fetched => "fetched",
            Outcome::Deleted => "deleted",
            Outcome::NoOperation => "no_operation",
            Outcome::UnknownDevice => "unknown_device",
            Outcome::AuthRefused => "auth_refused",
            Outcome::ProtocolError(_) => "protocol_error",
            Outcome::KeyGenerationFailed => "key_generation_failed",
            Outcome::KeyGenerationTimeout => "key_generation_timeout",
            Outcome::WrongKey => "wrong_key",
            Outcome::StoreFailed => "store_failed",
            Outcome::DeleteFailed => "delete_failed",
            Outcome::Internal => "internal_error",
        }
    }

    pub fn detail(&self) -> &'static str {
        match self {
            Outcome::ProtocolError(kind) => kind,
            other => other.as_str(),
        }
    }
}

/// What the connection task does next.
#[derive(Debug, PartialEq, Eq)]
pub enum Step {
    /// Write this frame (one write), then read the next frame under `wait`.
    Send { frame: Vec<u8>, wait: Wait },
    /// Read the next frame under `wait` (nothing to send).
    Read(Wait),
    /// Do this and call [`Session::resume`] with its result.
    Do(Effect),
    /// Write the END_SESSION frame if any (none when the byte stream cannot be trusted), then
    /// close the connection.
    End {
        frame: Option<Vec<u8>>,
        outcome: Outcome,
    },
}

/// Where the session is. Every state after a successful authentication holds the
/// [`Authorized`], so no state that issues or records can be reached without it.
#[derive(Debug)]
enum State<C, R> {
    /// AUTH_REQUEST not sent yet.
    Start,
    AwaitAuthResponse,
    Authenticating {
        version: u8,
    },
    AwaitKeyGeneration {
        op: Authorized<C>,
    },
    Issuing {
        op: Authorized<C>,
    },
    AwaitStore {
        op: Authorized<C>,
        issued: R,
    },
    RecordingStore {
        op: Authorized<C>,
        issued: R,
        stored: bool,
    },
    AwaitFetch {
        op: Authorized<C>,
    },
    RecordingFetch {
        op: Authorized<C>,
    },
    AwaitDelete {
        op: Authorized<C>,
    },
    RecordingDelete {
        op: Authorized<C>,
        deleted: bool,
    },
    /// The operation stays here, if there was one, for [`Session::finish`].
    Ended {
        op: Option<Authorized<C>>,
    },
}

impl<C, R> State<C, R> {
    /// The authorization this state holds, if any, leaving the state behind.
    fn into_authorized(self) -> Option<Authorized<C>> {
        match self {
            State::Start | State::AwaitAuthResponse | State::Authenticating { .. } => None,
            State::AwaitKeyGeneration { op }
            | State::Issuing { op }
            | State::AwaitStore { op, .. }
            | State::RecordingStore { op, .. }
            | State::AwaitFetch { op }
            | State::RecordingFetch { op }
            | State::AwaitDelete { op }
            | State::RecordingDelete { op, .. } => Some(op),
            State::Ended { op } => op,
        }
    }
}

/// One CAPF session: one connection, at most one operation. `C` and `R` are the service's
/// claim and issued-certificate record ([`SessionService::Claim`], [`SessionService::Issued`]).
#[derive(Debug)]
pub struct Session<C, R> {
    id: u32,
    state: State<C, R>,
}

impl<C, R> Session<C, R> {
    pub fn new(id: u32) -> Session<C, R> {
        Session {
            id,
            state: State::Start,
        }
    }

    pub fn id(&self) -> u32 {
        self.id
    }

    /// Name of the current state, for traces.
    pub fn state_name(&self) -> &'static str {
        match self.state {
            State::Start => "start",
            State::AwaitAuthResponse => "await auth response",
            State::Authenticating { .. } => "authenticating",
            State::AwaitKeyGeneration { .. } => "await key generation",
            State::Issuing { .. } => "issuing",
            State::AwaitStore { .. } => "await store",
            State::RecordingStore { .. } => "recording store",
            State::AwaitFetch { .. } => "await fetch",
            State::RecordingFetch { .. } => "recording fetch",
            State::AwaitDelete { .. } => "await delete",
            State::RecordingDelete { .. } => "recording delete",
            State::Ended { .. } => "ended",
        }
    }

    /// The server speaks first: AUTH_REQUEST.
    pub fn start(&mut self) -> Step {
        if !matches!(self.state, State::Start) {
            return self.protocol_error("start called twice");
        }
        self.state = State::AwaitAuthResponse;
        self.send(
            Message::AuthRequest(AuthRequest::new(PROTOCOL_VERSION, AuthType::None)),
            Wait::Frame,
        )
    }

    /// A whole frame arrived: its decoded header and its body.
    pub fn on_frame(&mut self, header: &Header, body: &[u8]) -> Step {
        if header.session_id != self.id {
            return self.protocol_error("session-id");
        }
        let message = match Frame::decode_body(header, body).and_then(|f| Message::from_frame(&f)) {
            Ok(m) => m,
            Err(e) => return self.decode_error(&e),
        };
        self.on_message(message)
    }

    /// The header could not be decoded, or the stream broke mid-frame: the byte stream can no
    /// longer be trusted, so close without END_SESSION.
    pub fn on_broken_stream(&mut self, kind: &'static str) -> Step {
        let outcome = match (&self.state, kind) {
            // The phone never produced its key in time: CUCM's "Key Generation Timeout".
            (State::AwaitKeyGeneration { .. }, TIMEOUT) => Outcome::KeyGenerationTimeout,
            _ => Outcome::ProtocolError(kind),
        };
        self.enter_ended();
        Step::End {
            frame: None,
            outcome,
        }
    }

    /// Does what the last [`Step::Do`] asked, through `service`, and goes on with its answer.
    /// An effect that does not belong to the current state (a bug in the driver) ends the
    /// session cleanly.
    pub async fn perform<S>(&mut self, effect: Effect, service: &mut S) -> Step
    where
        S: SessionService<Claim = C, Issued = R>,
    {
        // The operation stays in its state while the service works on it, so a session whose
        // task is dropped mid-effect still has it for `finish`.
        let resume = match (&mut self.state, effect) {
            (State::Authenticating { .. }, Effect::Authenticate(attempt)) => {
                Resume::Auth(service.authenticate(&attempt).await)
            }
            (State::Issuing { op }, Effect::Issue { public_key }) => {
                Resume::Issued(service.issue(op, public_key).await)
            }
            (State::RecordingStore { op, issued, stored }, Effect::RecordStore { .. }) => {
                Resume::Recorded(service.record_store(op, issued, *stored).await)
            }
            (State::RecordingFetch { op }, Effect::RecordFetch { certificate }) => {
                Resume::Recorded(service.record_fetch(op, certificate).await)
            }
            (State::RecordingDelete { op, deleted }, Effect::RecordDelete { .. }) => {
                Resume::Recorded(service.record_delete(op, *deleted).await)
            }
            _ => return self.end(Reason::InvalidElement, Outcome::Internal),
        };
        self.resume(resume)
    }

    /// The session is over (ended, or abandoned by the driver): lets the service record it and
    /// release the operation this session held, if any.
    pub async fn finish<S>(self, service: &mut S, outcome: Outcome)
    where
        S: SessionService<Claim = C, Issued = R>,
    {
        service.finish(self.state.into_authorized(), outcome).await;
    }

    fn on_message(&mut self, message: Message) -> Step {
        let state = std::mem::replace(&mut self.state, State::Ended { op: None });
        match (state, message) {
            (State::AwaitAuthResponse, Message::AuthResponse(resp)) => self.on_auth_response(resp),
            (state @ State::AwaitKeyGeneration { .. }, Message::RequestInProgress(_)) => {
                self.state = state;
                Step::Read(Wait::KeyGeneration)
            }
            (State::AwaitKeyGeneration { op }, Message::KeyGenerateResponse(resp)) => {
                match resp.public_key {
                    Some(public_key) => {
                        self.state = State::Issuing { op };
                        Step::Do(Effect::Issue { public_key })
                    }
                    None => {
                        self.state = State::AwaitKeyGeneration { op };
                        self.end(Reason::InvalidElement, Outcome::KeyGenerationFailed)
                    }
                }
            }
            (State::AwaitStore { op, issued }, Message::StoreCertificateResponse(resp)) => {
                let stored = resp.reason == Some(Reason::UpdateCertificate);
                self.state = State::RecordingStore { op, issued, stored };
                Step::Do(Effect::RecordStore { stored })
            }
            (State::AwaitFetch { op }, Message::FetchCertificateResponse(resp)) => {
                let reason = match required_reason(resp.reason) {
                    Ok(reason) => reason,
                    Err(kind) => {
                        self.state = State::AwaitFetch { op };
                        return self.protocol_error(kind);
                    }
                };
                let certificate = if reason == Reason::UpdateCertificate {
                    match resp.certificate {
                        Some(element) => {
                            let entry = element.first();
                            Some((entry.cert_type, entry.der.clone()))
                        }
                        None => {
                            self.state = State::AwaitFetch { op };
                            return self.protocol_error("missing-certificate");
                        }
                    }
                } else {
                    None
                };
                self.state = State::RecordingFetch { op };
                Step::Do(Effect::RecordFetch { certificate })
            }
            (State::AwaitDelete { op }, Message::DeleteCertificateResponse(resp)) => {
                let deleted = match required_reason(resp.reason) {
                    Ok(reason) => reason == Reason::UpdateCertificate,
                    Err(kind) => {
                        self.state = State::AwaitDelete { op };
                        return self.protocol_error(kind);
                    }
                };
                self.state = State::RecordingDelete { op, deleted };
                Step::Do(Effect::RecordDelete { deleted })
            }
            (state, _) => {
                self.state = state;
                self.protocol_error("unexpected-command")
            }
        }
    }

    fn on_auth_response(&mut self, resp: AuthResponse) -> Step {
        let version = match resp.version {
            Some(v) if (MIN_VERSION..=MAX_VERSION).contains(&v) => v,
            _ => return self.protocol_error("version"),
        };
        let device_name = match resp.device_name.as_deref() {
            None => return self.protocol_error("missing-device-name"),
            Some(name) => match DeviceName::from_wire(name) {
                Ok(name) => name,
                // A name that can never match a device is answered like an unknown one.
                Err(_) => return self.end(Reason::UnknownDevice, Outcome::UnknownDevice),
            },
        };
        self.state = State::Authenticating { version };
        Step::Do(Effect::Authenticate(Box::new(AuthAttempt {
            device_name,
            version,
            response: resp,
        })))
    }

    /// The answer to the effect the last [`Step::Do`] asked for.
    fn resume(&mut self, result: Resume<C, R>) -> Step {
        let state = std::mem::replace(&mut self.state, State::Ended { op: None });
        match (state, result) {
            (State::Authenticating { version }, Resume::Auth(verdict)) => {
                self.on_auth_verdict(version, verdict)
            }
            (State::Issuing { op }, Resume::Issued(Ok(issued))) => {
                self.state = State::AwaitStore {
                    op,
                    issued: issued.record,
                };
                self.send(
                    Message::StoreCertificateRequest(StoreCertificateRequest::new(
                        CertType::Lsc,
                        issued.der,
                    )),
                    Wait::Frame,
                )
            }
            (State::Issuing { op }, Resume::Issued(Err(failure))) => {
                self.state = State::Issuing { op };
                let outcome = match failure {
                    IssueFailure::WrongKey => Outcome::WrongKey,
                    IssueFailure::ClaimLost | IssueFailure::Internal => Outcome::Internal,
                };
                self.end(Reason::InvalidElement, outcome)
            }
            (State::RecordingStore { op, stored, .. }, Resume::Recorded(recorded)) => {
                self.state = State::Ended { op: Some(op) };
                match (stored, recorded) {
                    (false, _) => self.end(Reason::InvalidElement, Outcome::StoreFailed),
                    (true, Err(_)) => self.end(Reason::InvalidElement, Outcome::Internal),
                    (true, Ok(())) => self.end(Reason::UpdateCertificate, Outcome::Installed),
                }
            }
            (State::RecordingFetch { op }, Resume::Recorded(recorded)) => {
                self.state = State::Ended { op: Some(op) };
                match recorded {
                    // A fetch ends with reason 0 whatever the phone answered (spec 4.3).
                    Ok(()) => self.end(Reason::NoAction, Outcome::Fetched),
                    Err(_) => self.end(Reason::InvalidElement, Outcome::Internal),
                }
            }
            (State::RecordingDelete { op, deleted }, Resume::Recorded(recorded)) => {
                self.state = State::Ended { op: Some(op) };
                match (recorded, deleted) {
                    // A phone with nothing to delete is where a delete wants it; spec 4.4.
                    (Ok(()), true) => self.end(Reason::UpdateCertificate, Outcome::Deleted),
                    (Ok(()), false) => self.end(Reason::UpdateCertificate, Outcome::DeleteFailed),
                    (Err(_), _) => self.end(Reason::InvalidElement, Outcome::Internal),
                }
            }
            (state, _) => {
                // Resumed with the wrong result: a bug on our side, not the phone's. End
                // cleanly rather than guess.
                self.state = state;
                self.end(Reason::InvalidElement, Outcome::Internal)
            }
        }
    }

    fn on_auth_verdict(&mut self, version: u8, verdict: AuthVerdict<C>) -> Step {
        let (plan, claim) = match verdict {
            AuthVerdict::UnknownDevice => {
                return self.end(Reason::UnknownDevice, Outcome::UnknownDevice)
            }
            AuthVerdict::Refused => return self.end(Reason::InvalidElement, Outcome::AuthRefused),
            AuthVerdict::NoOperation => return self.end(Reason::NoAction, Outcome::NoOperation),
            AuthVerdict::Unavailable => return self.end(Reason::InvalidElement, Outcome::Internal),
            AuthVerdict::Proceed { plan, claim } => (plan, claim),
        };
        // The only place an `Authorized` is made.
        let op = Authorized::new(plan, claim);
        match plan.kind {
            OperationKind::Install => match KeyGenerateRequest::for_key(plan.key, version) {
                Some(request) => {
                    self.state = State::AwaitKeyGeneration { op };
                    self.send(Message::KeyGenerateRequest(request), Wait::KeyGeneration)
                }
                // Older clients (Jabber, VERSION < 3) are never offered EC (spec 4.2).
                None => {
                    self.state = State::Ended { op: Some(op) };
                    self.end(Reason::InvalidElement, Outcome::KeyGenerationFailed)
                }
            },
            OperationKind::Troubleshoot => {
                self.state = State::AwaitFetch { op };
                self.send(
                    Message::FetchCertificateRequest(Empty::default()),
                    Wait::Frame,
                )
            }
            OperationKind::Delete => {
                self.state = State::AwaitDelete { op };
                self.send(
                    Message::DeleteCertificateRequest(Empty::default()),
                    Wait::Frame,
                )
            }
        }
    }

    fn decode_error(&mut self, e: &DecodeError) -> Step {
        self.protocol_error(e.kind())
    }

    fn protocol_error(&mut self, kind: &'static str) -> Step {
        self.end(Reason::InvalidElement, Outcome::ProtocolError(kind))
    }

    /// Moves to `Ended`, keeping the operation of the state left.
    fn enter_ended(&mut self) {
        let state = std::mem::replace(&mut self.state, State::Ended { op: None });
        self.state = State::Ended {
            op: state.into_authorized(),
        };
    }

    fn end(&mut self, reason: Reason, outcome: Outcome) -> Step {
        self.enter_ended();
        Step::End {
            frame: encode(&Message::EndSession(ReasonOnly::new(reason)), self.id),
            outcome,
        }
    }

    fn send(&mut self, message: Message, wait: Wait) -> Step {
        match encode(&message, self.id) {
            Some(frame) => Step::Send { frame, wait },
            None => self.end(Reason::InvalidElement, Outcome::Internal),
        }
    }
}

fn encode(message: &Message, session_id: u32) -> Option<Vec<u8>> {
    message.encode(session_id).ok()
}

/// The REASON of a fetch or delete answer, which decides what is recorded: required, and
/// one the protocol defines (spec 3.2). Anything else is malformed, never "done".
fn required_reason(reason: Option<Reason>) -> Result<Reason, &'static str> {
    match reason {
        None => Err("missing-reason"),
        Some(Reason::Unknown(_)) => Err("unknown-reason"),
        Some(reason) => Ok(reason),
    }
}
