//! One phone connection: drives a [`Session`] over any async byte stream.
//!
//! The TLS library sits outside: whatever stream the acceptor produced (rustls today, a
//! legacy acceptor later) comes in here as `AsyncRead + AsyncWrite`.

use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::time::{timeout_at, Instant};
use tracing::{debug, info, warn};

use crate::config::Limits;
use capf_proto::session::{Effect, Outcome, Session, SessionService, Step, Wait, TIMEOUT};
use capf_proto::{Command, Header, HEADER_LEN};

#[cfg(test)]
mod tests;

/// How long closing (close_notify) may take after END_SESSION.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(2);

/// Runs a whole session on an established stream, `service` doing the work its effects ask
/// for, and lets the service record how it ended (which it also returns).
pub async fn run<T, S>(stream: &mut T, service: &mut S, session_id: u32, limits: &Limits) -> Outcome
where
    T: AsyncRead + AsyncWrite + Unpin,
    S: SessionService,
{
    let mut session = Session::<S::Claim, S::Issued>::new(session_id);
    let outcome = drive(stream, service, &mut session, limits).await;
    session.finish(service, outcome).await;
    outcome
}

async fn drive<T, S>(
    stream: &mut T,
    service: &mut S,
    session: &mut Session<S::Claim, S::Issued>,
    limits: &Limits,
) -> Outcome
where
    T: AsyncRead + AsyncWrite + Unpin,
    S: SessionService,
{
    let session_deadline = Instant::now() + limits.session_timeout;
    let mut step = session.start();
    // Set when the key-generation wait starts, so REQUEST_IN_PROGRESS does not extend it.
    let mut keygen_deadline: Option<Instant> = None;
    loop {
        step = match step {
            Step::Send { frame, wait } => {
                if let Err(e) = write_frame(stream, &frame, session_deadline).await {
                    debug!(error = %e, "write failed");
                    return Outcome::ProtocolError("write-failed");
                }
                // Sent: now read what the phone answers, as the step said.
                Step::Read(wait)
            }
            Step::Read(wait) => {
                read_next(
                    stream,
                    session,
                    wait,
                    limits,
                    session_deadline,
                    &mut keygen_deadline,
                )
                .await
            }
            Step::Do(effect) => {
                trace_effect(&effect);
                session.perform(effect, service).await
            }
            Step::End { frame, outcome } => {
                if let Some(frame) = frame {
                    let _ = write_frame(stream, &frame, session_deadline).await;
                }
                let _ = tokio::time::timeout(CLOSE_TIMEOUT, stream.shutdown()).await;
                return outcome;
            }
        };
    }
}

/// What the phone sent that asked for the effect, for traces.
fn trace_effect(effect: &Effect) {
    match effect {
        Effect::Authenticate(attempt) => {
            tracing::Span::current().record("device", attempt.device_name.as_str());
            debug!(version = attempt.version, "AUTH_RESPONSE");
        }
        Effect::Issue { public_key } => {
            debug!(len = public_key.len(), "KEY_GENERATE_RESPONSE");
        }
        Effect::RecordStore { stored } => debug!(stored, "STORE_CERTIFICATE_RESPONSE"),
        Effect::RecordFetch { certificate } => debug!(
            certificate = certificate.is_some(),
            "FETCH_CERTIFICATE_RESPONSE"
        ),
        Effect::RecordDelete { deleted } => debug!(deleted, "DELETE_CERTIFICATE_RESPONSE"),
    }
}

/// Reads one frame under the deadline that applies and hands it to the session.
async fn read_next<T, C, R>(
    stream: &mut T,
    session: &mut Session<C, R>,
    wait: Wait,
    limits: &Limits,
    session_deadline: Instant,
    keygen_deadline: &mut Option<Instant>,
) -> Step
where
    T: AsyncRead + Unpin,
{
    let deadline = match wait {
        Wait::Frame => Instant::now() + limits.frame_timeout,
        Wait::KeyGeneration => {
            *keygen_deadline.get_or_insert_with(|| Instant::now() + limits.keygen_timeout)
        }
    }
    .min(session_deadline);
    let mut head = [0u8; HEADER_LEN];
    match timeout_at(deadline, stream.read_exact(&mut head)).await {
        Err(_) => {
            info!(
                state = session.state_name(),
                "timed out waiting for the phone"
            );
            return session.on_broken_stream(TIMEOUT);
        }
        Ok(Err(_)) => return session.on_broken_stream("truncated-header"),
        Ok(Ok(_)) => {}
    }
    let header = match Header::decode(&head) {
        Ok(h) => h,
        Err(e) => {
            warn!(error = %e, "bad frame header");
            return session.on_broken_stream(e.kind());
        }
    };
    let mut body = vec![0u8; usize::from(header.body_len)];
    match timeout_at(deadline, stream.read_exact(&mut body)).await {
        Err(_) => return session.on_broken_stream(TIMEOUT),
        Ok(Err(_)) => return session.on_broken_stream("truncated-frame"),
        Ok(Ok(_)) => {}
    }
    debug!(
        command = header.command.name(),
        len = header.body_len,
        state = session.state_name(),
        "frame received"
    );
    if header.command == Command::RequestInProgress {
        debug!(state = session.state_name(), "REQUEST_IN_PROGRESS");
    }
    session.on_frame(&header, &body)
}

/// Writes one frame with a single write, so it leaves as one TLS record (spec 1.7).
async fn write_frame<S>(stream: &mut S, frame: &[u8], deadline: Instant) -> std::io::Result<()>
where
    S: AsyncWrite + Unpin,
{
    let write = async {
        stream.write_all(frame).await?;
        stream.flush().await
    };
    match timeout_at(deadline, write).await {
        Ok(r) => r,
        Err(_) => Err(std::io::Error::new(
            std::io::ErrorKind::TimedOut,
            "write timed out",
        )),
    }
}
