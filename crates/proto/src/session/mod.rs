//! The CAPF session state machine (spec 4.10), free of I/O.
//!
//! A connection task feeds it frames and the results of the work it asked for
//! (authentication, issuing, recording) and does what each [`Step`] says. It never touches
//! sockets, clocks or the database, so every path, failures included, is a plain unit test.
//!
//! A certificate can only be requested from the phone after [`Session::resume`] received an
//! [`AuthDecision::Proceed`], which carries an [`AuthProof`]: a value only the authenticator
//! can construct.

use crate::{
    AuthRequest, AuthResponse, AuthType, CertType, DecodeError, Empty, Frame, Header,
    KeyGenerateRequest, Message, Reason, ReasonOnly, StoreCertificateRequest, PROTOCOL_VERSION,
};
use capf_model::device::DeviceName;
use capf_model::keyspec::KeySpec;
use capf_model::operation::OperationKind;

#[cfg(test)]
mod tests;

/// Oldest and newest VERSION element values accepted from a phone (Jabber sends 2).
const MIN_VERSION: u8 = 1;
const MAX_VERSION: u8 = PROTOCOL_VERSION;

/// Evidence that the phone authenticated. Only the authenticator constructs it.
#[derive(Debug)]
pub struct AuthProof(());

impl AuthProof {
    /// Callers must have checked the phone's credentials against the device's mode.
    pub fn authenticated() -> AuthProof {
        AuthProof(())
    }

    /// The fuzz target of the session plays the authenticator, so it needs the proof too.
    /// `cfg(fuzzing)` is set only by `cargo fuzz`: no other build can forge a proof.
    #[cfg(fuzzing)]
    pub fn for_fuzzing() -> AuthProof {
        AuthProof(())
    }
}

/// What the phone presented in AUTH_RESPONSE, for the authenticator.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuthAttempt {
    pub device_name: DeviceName,
    pub version: u8,
    /// The full AUTH_RESPONSE, for certificate authentication.
    pub response: AuthResponse,
}

/// The operation a session performs once authenticated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Plan {
    pub kind: OperationKind,
    pub key: KeySpec,
}

/// The authenticator's verdict.
#[derive(Debug)]
pub enum AuthDecision {
    UnknownDevice,
    /// Wrong credentials, locked device, or an operation another session holds.
    Refused,
    /// Authenticated, nothing scheduled.
    NoOperation,
    Proceed(Plan, AuthProof),
    /// capf could not decide (database unreachable): end without blaming the phone.
    Unavailable,
}

/// Work the connection task must do before the session can go on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Effect {
    Authenticate(Box<AuthAttempt>),
    /// Check the phone's key against the plan and issue an LSC for it.
    Issue {
        public_key: Vec<u8>,
        key: KeySpec,
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

/// Result of an [`Effect`].
#[derive(Debug)]
pub enum Resume {
    Auth(AuthDecision),
    /// DER of the issued LSC, or why not.
    Issued(Result<Vec<u8>, IssueFailure>),
    /// Whether the outcome was recorded durably.
    Recorded(bool),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IssueFailure {
    /// The phone's key is not the scheduled algorithm/size/curve, or is malformed.
    WrongKey,
    /// Signing or recording failed on our side.
    Internal,
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

#[derive(Debug)]
enum State {
    /// AUTH_REQUEST not sent yet.
    Start,
    AwaitAuthResponse,
    Authenticating {
        version: u8,
    },
    AwaitKeyGeneration {
        key: KeySpec,
    },
    Issuing,
    AwaitStore,
    RecordingStore {
        stored: bool,
    },
    AwaitFetch,
    RecordingFetch,
    AwaitDelete,
    RecordingDelete {
        deleted: bool,
    },
    Ended,
}

/// One CAPF session: one connection, at most one operation.
#[derive(Debug)]
pub struct Session {
    id: u32,
    state: State,
}

impl Session {
    pub fn new(id: u32) -> Session {
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
            State::Issuing => "issuing",
            State::AwaitStore => "await store",
            State::RecordingStore { .. } => "recording store",
            State::AwaitFetch => "await fetch",
            State::RecordingFetch => "recording fetch",
            State::AwaitDelete => "await delete",
            State::RecordingDelete { .. } => "recording delete",
            State::Ended => "ended",
        }
    }

    /// The server speaks first: AUTH_REQUEST.
    pub fn start(&mut self) -> Step {
        if !matches!(self.state, State::Start) {
            return self.protocol_error("start called twice");
        }
        self.state = State::AwaitAuthResponse;
        self.send(
            Message::AuthRequest(AuthRequest {
                version: Some(PROTOCOL_VERSION),
                auth_type: Some(AuthType::None),
                ..Default::default()
            }),
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
        self.state = State::Ended;
        Step::End {
            frame: None,
            outcome,
        }
    }

    fn on_message(&mut self, message: Message) -> Step {
        match (&self.state, message) {
            (State::AwaitAuthResponse, Message::AuthResponse(resp)) => self.on_auth_response(resp),
            (State::AwaitKeyGeneration { .. }, Message::RequestInProgress(_)) => {
                Step::Read(Wait::KeyGeneration)
            }
            (State::AwaitKeyGeneration { key }, Message::KeyGenerateResponse(resp)) => {
                let key = *key;
                match resp.public_key {
                    Some(public_key) => {
                        self.state = State::Issuing;
                        Step::Do(Effect::Issue { public_key, key })
                    }
                    None => self.end(Reason::InvalidElement, Outcome::KeyGenerationFailed),
                }
            }
            (State::AwaitStore, Message::StoreCertificateResponse(resp)) => {
                let stored = resp.reason == Some(Reason::UpdateCertificate);
                self.state = State::RecordingStore { stored };
                Step::Do(Effect::RecordStore { stored })
            }
            (State::AwaitFetch, Message::FetchCertificateResponse(resp)) => {
                let certificate = if resp.reason == Some(Reason::UpdateCertificate) {
                    match resp.certificate {
                        Some(element) => {
                            let entry = element.first();
                            Some((entry.cert_type, entry.der.clone()))
                        }
                        None => return self.protocol_error("missing-certificate"),
                    }
                } else {
                    None
                };
                self.state = State::RecordingFetch;
                Step::Do(Effect::RecordFetch { certificate })
            }
            (State::AwaitDelete, Message::DeleteCertificateResponse(resp)) => {
                let deleted = resp.reason == Some(Reason::UpdateCertificate);
                self.state = State::RecordingDelete { deleted };
                Step::Do(Effect::RecordDelete { deleted })
            }
            _ => self.protocol_error("unexpected-command"),
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

    /// The result of the effect the last [`Step::Do`] asked for.
    pub fn resume(&mut self, result: Resume) -> Step {
        let state = std::mem::replace(&mut self.state, State::Ended);
        match (state, result) {
            (State::Authenticating { version }, Resume::Auth(decision)) => {
                self.on_auth_decision(version, decision)
            }
            (State::Issuing, Resume::Issued(Ok(der))) => {
                self.state = State::AwaitStore;
                self.send(
                    Message::StoreCertificateRequest(StoreCertificateRequest::new(
                        CertType::Lsc,
                        der,
                    )),
                    Wait::Frame,
                )
            }
            (State::Issuing, Resume::Issued(Err(IssueFailure::WrongKey))) => {
                self.end(Reason::InvalidElement, Outcome::WrongKey)
            }
            (State::Issuing, Resume::Issued(Err(IssueFailure::Internal))) => {
                self.end(Reason::InvalidElement, Outcome::Internal)
            }
            (State::RecordingStore { stored }, Resume::Recorded(recorded)) => {
                if !stored {
                    self.end(Reason::InvalidElement, Outcome::StoreFailed)
                } else if !recorded {
                    self.end(Reason::InvalidElement, Outcome::Internal)
                } else {
                    self.end(Reason::UpdateCertificate, Outcome::Installed)
                }
            }
            // A fetch ends with reason 0 whatever the phone answered (spec 4.3).
            (State::RecordingFetch, Resume::Recorded(true)) => {
                self.end(Reason::NoAction, Outcome::Fetched)
            }
            (State::RecordingDelete { deleted }, Resume::Recorded(true)) => {
                // A phone with nothing to delete is where a delete wants it; spec 4.4.
                let outcome = if deleted {
                    Outcome::Deleted
                } else {
                    Outcome::DeleteFailed
                };
                self.end(Reason::UpdateCertificate, outcome)
            }
            (State::RecordingFetch | State::RecordingDelete { .. }, Resume::Recorded(false)) => {
                self.end(Reason::InvalidElement, Outcome::Internal)
            }
            (state, _) => {
                // The driver resumed with the wrong result: a bug on our side, not the
                // phone's. End cleanly rather than guess.
                self.state = state;
                self.end(Reason::InvalidElement, Outcome::Internal)
            }
        }
    }

    fn on_auth_decision(&mut self, version: u8, decision: AuthDecision) -> Step {
        match decision {
            AuthDecision::UnknownDevice => self.end(Reason::UnknownDevice, Outcome::UnknownDevice),
            AuthDecision::Refused => self.end(Reason::InvalidElement, Outcome::AuthRefused),
            AuthDecision::NoOperation => self.end(Reason::NoAction, Outcome::NoOperation),
            AuthDecision::Unavailable => self.end(Reason::InvalidElement, Outcome::Internal),
            AuthDecision::Proceed(plan, _proof) => match plan.kind {
                OperationKind::Install => match KeyGenerateRequest::for_key(plan.key, version) {
                    Some(request) => {
                        self.state = State::AwaitKeyGeneration { key: plan.key };
                        self.send(Message::KeyGenerateRequest(request), Wait::KeyGeneration)
                    }
                    // Older clients (Jabber, VERSION < 3) are never offered EC (spec 4.2).
                    None => self.end(Reason::InvalidElement, Outcome::KeyGenerationFailed),
                },
                OperationKind::Troubleshoot => {
                    self.state = State::AwaitFetch;
                    self.send(
                        Message::FetchCertificateRequest(Empty::default()),
                        Wait::Frame,
                    )
                }
                OperationKind::Delete => {
                    self.state = State::AwaitDelete;
                    self.send(
                        Message::DeleteCertificateRequest(Empty::default()),
                        Wait::Frame,
                    )
                }
            },
        }
    }

    fn decode_error(&mut self, e: &DecodeError) -> Step {
        self.protocol_error(e.kind())
    }

    fn protocol_error(&mut self, kind: &'static str) -> Step {
        self.end(Reason::InvalidElement, Outcome::ProtocolError(kind))
    }

    fn end(&mut self, reason: Reason, outcome: Outcome) -> Step {
        self.state = State::Ended;
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
