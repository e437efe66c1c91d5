//! The connection driver over an in-memory stream, with a fake service: what goes on the
//! wire, the deadlines, and what the service is asked and told.

use std::time::Duration;

use tokio::io::{duplex, AsyncReadExt, AsyncWriteExt, DuplexStream};
use tokio::time::Instant;

use super::run;
use crate::config::Limits;
use capf_model::keyspec::KeySpec;
use capf_model::operation::OperationKind;
use capf_proto::session::{
    AuthAttempt, AuthVerdict, Authorized, IssueFailure, Issued, Outcome, Plan, RecordFailure,
    SessionService, TIMEOUT,
};
use capf_proto::{
    AuthResponse, CertType, Empty, Header, KeyGenerateResponse, Message, Reason, ReasonOnly,
    HEADER_LEN,
};

const SID: u32 = 0x1a2b_3c41;
const LSC: &[u8] = &[0x30, 0x03, 0x02, 0x01, 0x05];

/// Answers as a server with one pending RSA install would, and notes what it was asked.
#[derive(Debug, Default)]
struct Fake {
    authenticated: Vec<String>,
    issued_for: Vec<(KeySpec, Vec<u8>)>,
    stored: Vec<bool>,
    finished: Vec<(bool, Outcome)>,
}

impl SessionService for Fake {
    type Claim = ();
    type Issued = ();

    async fn authenticate(&mut self, attempt: &AuthAttempt) -> AuthVerdict<()> {
        self.authenticated
            .push(attempt.device_name.as_str().to_string());
        AuthVerdict::Proceed {
            plan: Plan {
                kind: OperationKind::Install,
                key: KeySpec::Rsa(2048),
            },
            claim: (),
        }
    }

    async fn issue(
        &mut self,
        op: &mut Authorized<()>,
        public_key: Vec<u8>,
    ) -> Result<Issued<()>, IssueFailure> {
        self.issued_for.push((op.plan().key, public_key));
        Ok(Issued {
            der: LSC.to_vec(),
            record: (),
        })
    }

    async fn record_store(
        &mut self,
        _op: &mut Authorized<()>,
        _issued: &(),
        stored: bool,
    ) -> Result<(), RecordFailure> {
        self.stored.push(stored);
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

/// Deadlines of the tests. The tests that wait for one run under paused tokio time: the
/// runtime moves the clock to the next timer whenever every task waits, so nothing sleeps.
const FRAME_TIMEOUT: Duration = Duration::from_secs(5);
const KEYGEN_TIMEOUT: Duration = Duration::from_secs(30);
const SESSION_TIMEOUT: Duration = Duration::from_secs(60);

fn limits() -> Limits {
    Limits {
        frame_timeout: FRAME_TIMEOUT,
        keygen_timeout: KEYGEN_TIMEOUT,
        session_timeout: SESSION_TIMEOUT,
        ..Limits::default()
    }
}

/// The driver on one end of a pipe, the test playing the phone on the other.
fn start() -> (DuplexStream, tokio::task::JoinHandle<(Outcome, Fake)>) {
    start_with(limits())
}

fn start_with(limits: Limits) -> (DuplexStream, tokio::task::JoinHandle<(Outcome, Fake)>) {
    let (phone, mut server) = duplex(64 * 1024);
    let task = tokio::spawn(async move {
        let mut fake = Fake::default();
        let outcome = run(&mut server, &mut fake, SID, &limits).await;
        (outcome, fake)
    });
    (phone, task)
}

async fn read_message(phone: &mut DuplexStream) -> Option<Message> {
    let mut head = [0u8; HEADER_LEN];
    phone.read_exact(&mut head).await.ok()?;
    let header = Header::decode(&head).expect("the driver sends valid headers");
    assert_eq!(header.session_id, SID);
    let mut body = vec![0u8; usize::from(header.body_len)];
    phone.read_exact(&mut body).await.ok()?;
    let (_, message) = Message::decode(&[head.to_vec(), body].concat()).unwrap();
    Some(message)
}

async fn send(phone: &mut DuplexStream, message: Message) {
    phone
        .write_all(&message.encode(SID).unwrap())
        .await
        .unwrap();
}

async fn authenticate(phone: &mut DuplexStream) {
    assert!(matches!(
        read_message(phone).await,
        Some(Message::AuthRequest(_))
    ));
    send(
        phone,
        Message::AuthResponse(AuthResponse {
            reason: Some(Reason::UpdateCertificate),
            version: Some(3),
            device_name: Some("SEP001122334455".into()),
            password: Some("123456".into()),
            ..Default::default()
        }),
    )
    .await;
    assert!(matches!(
        read_message(phone).await,
        Some(Message::KeyGenerateRequest(r)) if r.key_spec() == Some(KeySpec::Rsa(2048))
    ));
}

#[tokio::test]
async fn install_flow() {
    let (mut phone, task) = start();
    authenticate(&mut phone).await;
    send(&mut phone, Message::RequestInProgress(Empty::default())).await;
    send(
        &mut phone,
        Message::KeyGenerateResponse(KeyGenerateResponse {
            public_key: Some(vec![1, 2, 3]),
            ..Default::default()
        }),
    )
    .await;
    let Some(Message::StoreCertificateRequest(store)) = read_message(&mut phone).await else {
        panic!("no STORE_CERTIFICATE_REQUEST");
    };
    assert_eq!(store.certificate.unwrap().first().der, LSC);
    send(
        &mut phone,
        Message::StoreCertificateResponse(ReasonOnly::new(Reason::UpdateCertificate)),
    )
    .await;
    let Some(Message::EndSession(end)) = read_message(&mut phone).await else {
        panic!("no END_SESSION");
    };
    assert_eq!(end.reason, Some(Reason::UpdateCertificate));
    // The driver closes after END_SESSION.
    assert!(read_message(&mut phone).await.is_none());

    let (outcome, fake) = task.await.unwrap();
    assert_eq!(outcome, Outcome::Installed);
    assert_eq!(fake.authenticated, vec!["SEP001122334455".to_string()]);
    assert_eq!(fake.issued_for, vec![(KeySpec::Rsa(2048), vec![1, 2, 3])]);
    assert_eq!(fake.stored, vec![true]);
    assert_eq!(fake.finished, vec![(true, Outcome::Installed)]);
}

#[tokio::test]
async fn garbage_closes_without_end_session_and_without_authenticating() {
    let (mut phone, task) = start();
    assert!(matches!(
        read_message(&mut phone).await,
        Some(Message::AuthRequest(_))
    ));
    // Not a CAPF frame: the stream cannot be trusted, nothing more is sent.
    phone.write_all(b"GET / HTTP/1.1\r\n\r\n").await.unwrap();
    assert!(read_message(&mut phone).await.is_none());

    let (outcome, fake) = task.await.unwrap();
    assert_eq!(outcome, Outcome::ProtocolError("protocol-id"));
    assert!(fake.authenticated.is_empty());
    assert_eq!(
        fake.finished,
        vec![(false, Outcome::ProtocolError("protocol-id"))]
    );
}

#[tokio::test]
async fn a_phone_that_hangs_up_mid_frame_ends_the_session() {
    let (mut phone, task) = start();
    authenticate(&mut phone).await;
    // Half a header, then the phone goes away.
    phone.write_all(&[0x55, 0x04, 0x1a]).await.unwrap();
    drop(phone);

    let (outcome, fake) = task.await.unwrap();
    assert_eq!(outcome, Outcome::ProtocolError("truncated-header"));
    // The claim goes back to the service even though the session never ended cleanly.
    assert_eq!(
        fake.finished,
        vec![(true, Outcome::ProtocolError("truncated-header"))]
    );
}

#[tokio::test(start_paused = true)]
async fn the_key_generation_wait_ends_at_its_deadline_whatever_the_phone_says() {
    let (mut phone, task) = start();
    authenticate(&mut phone).await;
    let waiting_since = Instant::now();
    // Twenty seconds in, "still generating" does not extend the wait...
    tokio::time::sleep(Duration::from_secs(20)).await;
    send(&mut phone, Message::RequestInProgress(Empty::default())).await;
    // ... which ends at its deadline, well before the frame deadline counted from the
    // REQUEST_IN_PROGRESS or the session's. Nothing is sent on a timeout: the connection is
    // just closed.
    assert!(read_message(&mut phone).await.is_none());
    assert_eq!(waiting_since.elapsed(), KEYGEN_TIMEOUT);

    let (outcome, fake) = task.await.unwrap();
    assert_eq!(outcome, Outcome::KeyGenerationTimeout);
    assert!(fake.issued_for.is_empty());
    assert_eq!(fake.finished, vec![(true, Outcome::KeyGenerationTimeout)]);
}

#[tokio::test(start_paused = true)]
async fn a_phone_that_says_nothing_is_dropped_at_the_frame_deadline() {
    let (mut phone, task) = start();
    let started = Instant::now();
    assert!(matches!(
        read_message(&mut phone).await,
        Some(Message::AuthRequest(_))
    ));
    // No AUTH_RESPONSE: the connection is closed when the frame deadline passes.
    assert!(read_message(&mut phone).await.is_none());
    assert_eq!(started.elapsed(), FRAME_TIMEOUT);

    let (outcome, fake) = task.await.unwrap();
    assert_eq!(outcome, Outcome::ProtocolError(TIMEOUT));
    assert_eq!(
        fake.finished,
        vec![(false, Outcome::ProtocolError(TIMEOUT))]
    );
}

#[tokio::test(start_paused = true)]
async fn the_session_deadline_bounds_the_key_generation_wait() {
    let (mut phone, task) = start_with(Limits {
        session_timeout: Duration::from_secs(12),
        ..limits()
    });
    let started = Instant::now();
    authenticate(&mut phone).await;
    // The key-generation wait (30 s) would outlast the session (12 s): the session's
    // deadline ends it.
    assert!(read_message(&mut phone).await.is_none());
    assert_eq!(started.elapsed(), Duration::from_secs(12));

    let (outcome, fake) = task.await.unwrap();
    assert_eq!(outcome, Outcome::KeyGenerationTimeout);
    assert!(fake.issued_for.is_empty());
}
