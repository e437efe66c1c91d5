//! How one simulated phone's session ended, reduced to what a benchmark counts: enrolled
//! (with its timings) or failed, by kind.

use serde::Serialize;

use crate::phone::{PhoneError, PhoneReport, SessionTiming};
use capf_proto::Reason;

/// Why a session did not enroll. The kinds are what an operator acts on differently: a
/// connect error is the network or the listener, END_SESSION 9 is provisioning, a timeout
/// is an overloaded server.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub(super) enum Failure {
    /// The TCP connect failed (refused, no route, out of ports or descriptors).
    Connect,
    /// The TLS handshake failed (including a server that closed before finishing it).
    Tls,
    /// The server did not answer in time (handshake or any frame).
    Timeout,
    /// The server closed or reset the connection without END_SESSION.
    Closed,
    /// END_SESSION 0: the server had nothing to do (no pending operation).
    EndSession0,
    /// END_SESSION 7: refused or failed (authentication, key, store).
    EndSession7,
    /// END_SESSION 9: unknown device.
    EndSession9,
    /// END_SESSION with another reason, or END_SESSION 1 without a certificate.
    EndSessionOther,
    /// The server sent something malformed or unexpected.
    Protocol,
    /// Another connection error.
    Io,
    /// The phone could not produce the key asked for (e.g. not the pool's key type).
    Key,
    /// The session's task itself failed (a bug in the load generator).
    Internal,
}

impl Failure {
    pub(super) fn as_str(self) -> &'static str {
        match self {
            Failure::Connect => "connect",
            Failure::Tls => "tls",
            Failure::Timeout => "timeout",
            Failure::Closed => "closed_without_end_session",
            Failure::EndSession0 => "end_session_0",
            Failure::EndSession7 => "end_session_7",
            Failure::EndSession9 => "end_session_9",
            Failure::EndSessionOther => "end_session_other",
            Failure::Protocol => "protocol",
            Failure::Io => "io",
            Failure::Key => "key",
            Failure::Internal => "internal",
        }
    }
}

/// One session, as the benchmark records it.
#[derive(Debug, Clone)]
pub(super) enum Outcome {
    Enrolled {
        timing: SessionTiming,
        tls: String,
    },
    Failed {
        kind: Failure,
        detail: String,
        /// Present when the TLS handshake completed (it is measured even when the
        /// session later fails).
        timing: Option<SessionTiming>,
    },
}

impl Outcome {
    pub(super) fn failed(kind: Failure, detail: impl Into<String>) -> Outcome {
        Outcome::Failed {
            kind,
            detail: detail.into(),
            timing: None,
        }
    }

    pub(super) fn is_enrolled(&self) -> bool {
        matches!(self, Outcome::Enrolled { .. })
    }
}

/// An enrollment is END_SESSION 1 after the phone received and stored a certificate.
pub(super) fn classify(result: Result<PhoneReport, PhoneError>) -> Outcome {
    let report = match result {
        Ok(report) => report,
        Err(e) => return Outcome::failed(error_kind(&e), e.to_string()),
    };
    let kind = match report.end_reason {
        Some(Reason::UpdateCertificate) if report.lsc_pem.is_some() => {
            return Outcome::Enrolled {
                timing: report.timing,
                tls: report.tls,
            }
        }
        Some(Reason::NoAction) => Failure::EndSession0,
        Some(Reason::InvalidElement) => Failure::EndSession7,
        Some(Reason::UnknownDevice) => Failure::EndSession9,
        Some(_) => Failure::EndSessionOther,
        None => Failure::Closed,
    };
    Outcome::Failed {
        kind,
        detail: report.summary(),
        timing: Some(report.timing),
    }
}

fn error_kind(e: &PhoneError) -> Failure {
    use std::io::ErrorKind;
    match e {
        PhoneError::Connect { .. } => Failure::Connect,
        PhoneError::Tls(_) => Failure::Tls,
        PhoneError::Timeout => Failure::Timeout,
        PhoneError::Io(io) => match io.kind() {
            ErrorKind::UnexpectedEof
            | ErrorKind::ConnectionReset
            | ErrorKind::ConnectionAborted
            | ErrorKind::BrokenPipe => Failure::Closed,
            _ => Failure::Io,
        },
        PhoneError::Decode(_) | PhoneError::Protocol(_) => Failure::Protocol,
        PhoneError::Key(_) => Failure::Key,
        PhoneError::File { .. } => Failure::Internal,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn report(end: Option<u8>, lsc: bool) -> PhoneReport {
        PhoneReport {
            end_reason: end.map(Reason::from),
            operation: Some("install"),
            lsc_pem: lsc.then(|| "PEM".to_string()),
            key_pem: None,
            session_id: 1,
            timing: SessionTiming::default(),
            tls: String::new(),
        }
    }

    #[test]
    fn only_a_stored_certificate_and_end_session_1_is_an_enrollment() {
        assert!(classify(Ok(report(Some(1), true))).is_enrolled());
        let kinds = [
            (report(Some(1), false), Failure::EndSessionOther),
            (report(Some(0), false), Failure::EndSession0),
            (report(Some(7), true), Failure::EndSession7),
            (report(Some(9), false), Failure::EndSession9),
            (report(Some(42), false), Failure::EndSessionOther),
            (report(None, true), Failure::Closed),
        ];
        for (r, kind) in kinds {
            match classify(Ok(r)) {
                Outcome::Failed {
                    kind: k, timing, ..
                } => {
                    assert_eq!(k, kind);
                    assert!(timing.is_some());
                }
                other => panic!("{other:?}"),
            }
        }
    }

    #[test]
    fn errors_map_to_kinds() {
        let io = |k| PhoneError::Io(std::io::Error::new(k, "x"));
        let cases = [
            (PhoneError::Timeout, Failure::Timeout),
            (PhoneError::Tls("x".into()), Failure::Tls),
            (io(std::io::ErrorKind::ConnectionReset), Failure::Closed),
            (io(std::io::ErrorKind::UnexpectedEof), Failure::Closed),
            (io(std::io::ErrorKind::Other), Failure::Io),
            (PhoneError::Protocol("x".into()), Failure::Protocol),
            (PhoneError::Key("x".into()), Failure::Key),
        ];
        for (e, kind) in cases {
            match classify(Err(e)) {
                Outcome::Failed { kind: k, .. } => assert_eq!(k, kind),
                other => panic!("{other:?}"),
            }
        }
    }
}
