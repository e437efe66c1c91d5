//! The lockout window in process: the service with a clock the test moves, a real SQLite
//! file, and a phone played over an in-memory pipe. Wrong strings lock the device; while
//! locked even the right string is refused unchecked; once the clock passes the window the
//! right string authenticates. No test here waits on the wall clock.

use std::net::SocketAddr;
use std::sync::Arc;

use capf_model::clock::{Clock, ManualClock};
use capf_model::device::DeviceName;
use capf_model::keyspec::KeySpec;
use capf_model::operation::{AuthMode, OperationKind};
use capf_pki::auth::TrustAnchors;
use capf_pki::ca::identity::{CapfIdentity, IdentityOptions};
use capf_proto::session::Outcome;
use capf_proto::{AuthResponse, Message, Reason, HEADER_LEN};
use capf_server::config::{ServeArgs, Settings};
use capf_server::metrics::NoMetrics;
use capf_server::server::connection;
use capf_server::service::{Service, ServiceSession, SessionContext};
use capf_store::{AuthString, DatabaseUrl, NewOperation};
use chrono::{DateTime, TimeDelta};
use tokio::io::{duplex, AsyncReadExt, AsyncWriteExt, DuplexStream};

const DEVICE: &str = "SEP0011223344AA";
const SECRET: &str = "135790";
const SID: u32 = 0x0102_0304;

/// What the phone saw: the server's answer to its AUTH_RESPONSE.
#[derive(Debug, PartialEq)]
enum Answer {
    /// KEY_GENERATE_REQUEST: authenticated.
    KeyRequest,
    EndSession(Option<Reason>),
}

async fn read_message(phone: &mut DuplexStream) -> Message {
    let mut head = [0u8; HEADER_LEN];
    phone.read_exact(&mut head).await.expect("a header");
    let len = usize::from(u16::from_be_bytes([head[6], head[7]]));
    let mut body = vec![0u8; len];
    phone.read_exact(&mut body).await.expect("a body");
    Message::decode(&[head.to_vec(), body].concat()).unwrap().1
}

/// One session: the phone answers AUTH_REQUEST with `string` and reports the server's reply;
/// then it hangs up.
async fn attempt(service: &Service, string: &str) -> (Answer, Outcome) {
    let (mut phone, mut server_end) = duplex(64 * 1024);
    let peer: SocketAddr = "127.0.0.1:50000".parse().unwrap();
    let ctx = SessionContext::new(SID, peer, service.live.current(), service.clock.now());
    let limits = service.live.current().limits();
    let server = async {
        let mut session = ServiceSession::new(service, ctx);
        connection::run(&mut server_end, &mut session, SID, &limits).await
    };
    let phone_side = async {
        assert!(matches!(
            read_message(&mut phone).await,
            Message::AuthRequest(_)
        ));
        let response = Message::AuthResponse(AuthResponse {
            reason: Some(Reason::UpdateCertificate),
            version: Some(3),
            device_name: Some(DEVICE.into()),
            password: Some(string.into()),
            ..Default::default()
        });
        phone
            .write_all(&response.encode(SID).unwrap())
            .await
            .unwrap();
        let answer = match read_message(&mut phone).await {
            Message::KeyGenerateRequest(_) => Answer::KeyRequest,
            Message::EndSession(end) => Answer::EndSession(end.reason),
            other => panic!("unexpected answer {other:?}"),
        };
        drop(phone);
        answer
    };
    let (outcome, answer) = tokio::join!(server, phone_side);
    (answer, outcome)
}

#[tokio::test]
async fn a_locked_device_opens_again_when_the_clock_passes_the_window() {
    let dir = tempfile::tempdir().unwrap();
    let store = capf_store::open(&DatabaseUrl::sqlite_file(&dir.path().join("capf.db")))
        .await
        .unwrap();
    let (identity, _) =
        CapfIdentity::load_or_create(&dir.path().join("certs"), &IdentityOptions::default())
            .unwrap();
    let settings = Settings::resolve(&ServeArgs {
        lockout_failures: Some(3),
        lockout_seconds: Some(600),
        ..Default::default()
    })
    .unwrap();
    let anchors = TrustAnchors::new(vec![identity.cert_der().to_vec()], vec![]).unwrap();
    let start = DateTime::from_timestamp(1_900_000_000, 0).unwrap();
    let clock = Arc::new(ManualClock::new(start));
    let service = Service::new(
        Arc::clone(&store),
        Arc::new(identity.issuer().clone()),
        Arc::new(settings),
        anchors,
        Arc::new(NoMetrics),
        Arc::clone(&clock) as Arc<dyn Clock>,
    );
    store
        .schedule(
            NewOperation {
                device_name: DeviceName::from_admin(DEVICE).unwrap(),
                kind: OperationKind::Install,
                auth_mode: AuthMode::String,
                auth_string: Some(AuthString(SECRET.into())),
                key: KeySpec::Rsa(2048),
                completes_by: start + TimeDelta::days(7),
            },
            start,
        )
        .await
        .unwrap();

    // Three wrong strings: each refused (END_SESSION 7), the third locks the device.
    for _ in 0..3 {
        let (answer, outcome) = attempt(&service, "000000").await;
        assert_eq!(answer, Answer::EndSession(Some(Reason::InvalidElement)));
        assert_eq!(outcome, Outcome::AuthRefused);
        clock.advance(TimeDelta::seconds(1));
    }
    let name = DeviceName::from_admin(DEVICE).unwrap();
    let lock = store.lock_state(&name).await.unwrap();
    assert!(lock.is_locked(clock.now()), "{lock:?}");

    // Locked: the right string is refused too, until the window has passed.
    clock.advance(TimeDelta::seconds(590));
    let (answer, _) = attempt(&service, SECRET).await;
    assert_eq!(answer, Answer::EndSession(Some(Reason::InvalidElement)));
    assert!(store
        .lock_state(&name)
        .await
        .unwrap()
        .is_locked(clock.now()));

    // Past the window the right string authenticates: the key request comes.
    clock.advance(TimeDelta::seconds(15));
    assert!(!store
        .lock_state(&name)
        .await
        .unwrap()
        .is_locked(clock.now()));
    let (answer, _) = attempt(&service, SECRET).await;
    assert_eq!(answer, Answer::KeyRequest);
}
