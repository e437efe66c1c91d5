//! The limits of capf's HTTP listeners (API and metrics), over real loopback sockets with
//! time the test controls: a client that sends nothing, trickles its headers, idles on a
//! kept-alive connection, stops reading its response or stalls its TLS handshake is dropped
//! at its deadline; beyond the connection cap a connection is closed at once.

use std::time::Duration;

use axum::routing::get;
use axum::Router;
use capf_server::http::{self, HttpLimits};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

const HEADER: Duration = Duration::from_secs(10);
const STALL: Duration = Duration::from_secs(30);

fn router() -> Router {
    Router::new()
        .route("/small", get(|| async { "ok\n" }))
        .route("/big", get(|| async { vec![b'x'; 64 << 20] }))
}

/// Serves [`router`] on a loopback port with `max_connections`; stops when dropped.
struct Served {
    addr: std::net::SocketAddr,
    _stop: tokio_util::sync::DropGuard,
}

async fn serve(max_connections: usize, tls: Option<tokio_rustls::TlsAcceptor>) -> Served {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let stop = CancellationToken::new();
    let limits = HttpLimits {
        max_connections,
        header_timeout: HEADER,
        stall_timeout: STALL,
    };
    tokio::spawn(http::serve(
        "test",
        listener,
        tls,
        router(),
        limits,
        stop.clone(),
    ));
    Served {
        addr,
        _stop: stop.drop_guard(),
    }
}

/// Sends a GET of `path` (one request, the connection kept alive).
async fn send_get(stream: &mut TcpStream, path: &str) -> std::io::Result<()> {
    let request = format!("GET {path} HTTP/1.1\r\nHost: capf\r\n\r\n");
    stream.write_all(request.as_bytes()).await
}

/// Reads until the server closes the connection; returns what it sent.
async fn read_to_close(stream: &mut TcpStream) -> Vec<u8> {
    let mut all = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match stream.read(&mut buf).await {
            Ok(0) | Err(_) => return all,
            Ok(n) => all.extend_from_slice(&buf[..n]),
        }
    }
}

/// Reads one response to a GET of /small (its body is "ok\n").
async fn read_small_response(stream: &mut TcpStream) -> String {
    let mut all = Vec::new();
    let mut buf = [0u8; 1024];
    while !all.ends_with(b"ok\n") {
        let n = stream.read(&mut buf).await.unwrap();
        assert!(
            n > 0,
            "closed before the response: {:?}",
            String::from_utf8_lossy(&all)
        );
        all.extend_from_slice(&buf[..n]);
    }
    String::from_utf8_lossy(&all).into_owned()
}

fn within(elapsed: Duration, deadline: Duration) {
    assert!(
        elapsed >= deadline && elapsed < deadline + Duration::from_secs(2),
        "closed after {elapsed:?}, deadline {deadline:?}"
    );
}

#[tokio::test(start_paused = true)]
async fn a_client_that_sends_nothing_is_closed_at_the_header_deadline() {
    let served = serve(8, None).await;
    let mut client = TcpStream::connect(served.addr).await.unwrap();
    let start = Instant::now();
    read_to_close(&mut client).await;
    within(start.elapsed(), HEADER);
}

#[tokio::test(start_paused = true)]
async fn headers_trickled_one_line_at_a_time_are_cut_at_the_header_deadline() {
    let served = serve(8, None).await;
    let client = TcpStream::connect(served.addr).await.unwrap();
    let (mut reader, mut writer) = client.into_split();
    let start = Instant::now();
    // Slowloris: a header line every 4 s, for far longer than the deadline.
    let trickle = tokio::spawn(async move {
        writer.write_all(b"GET /small HTTP/1.1\r\n").await?;
        for i in 0..30 {
            tokio::time::sleep(Duration::from_secs(4)).await;
            writer.write_all(format!("X-{i}: a\r\n").as_bytes()).await?;
        }
        Ok::<_, std::io::Error>(())
    });
    let mut buf = Vec::new();
    let _ = reader.read_to_end(&mut buf).await;
    within(start.elapsed(), HEADER);
    assert!(!String::from_utf8_lossy(&buf).contains("ok\n"));
    trickle.abort();
}

#[tokio::test(start_paused = true)]
async fn a_kept_alive_connection_is_closed_when_no_next_request_comes() {
    let served = serve(8, None).await;
    let mut client = TcpStream::connect(served.addr).await.unwrap();
    send_get(&mut client, "/small").await.unwrap();
    let response = read_small_response(&mut client).await;
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
    // The connection stays open for a next request...
    let answered = Instant::now();
    send_get(&mut client, "/small").await.unwrap();
    assert!(read_small_response(&mut client)
        .await
        .starts_with("HTTP/1.1 200"));
    // ... but not idle beyond the header deadline.
    let idle_from = Instant::now();
    read_to_close(&mut client).await;
    within(idle_from.elapsed(), HEADER);
    assert!(answered.elapsed() < HEADER * 2);
}

#[tokio::test(start_paused = true)]
async fn beyond_the_cap_a_connection_is_closed_until_one_ends() {
    let served = serve(2, None).await;
    let first = TcpStream::connect(served.addr).await.unwrap();
    let _second = TcpStream::connect(served.addr).await.unwrap();
    // The third is closed at once, unserved, long before any deadline.
    let start = Instant::now();
    let mut third = TcpStream::connect(served.addr).await.unwrap();
    let _ = send_get(&mut third, "/small").await;
    assert!(read_to_close(&mut third).await.is_empty());
    assert!(start.elapsed() < Duration::from_secs(1));
    // When a connection ends, its slot serves the next client.
    drop(first);
    // (The server may not have seen the first one go yet: retried a moment later.)
    let response = get_small_once_served(served.addr, Duration::from_millis(10)).await;
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
}

/// GETs /small on new connections, `retry` apart, until one is served; returns the answer.
async fn get_small_once_served(addr: std::net::SocketAddr, retry: Duration) -> String {
    loop {
        let mut next = TcpStream::connect(addr).await.unwrap();
        send_get(&mut next, "/small").await.unwrap();
        let answer = read_to_close_or_ok(&mut next).await;
        if !answer.is_empty() {
            return answer;
        }
        tokio::time::sleep(retry).await;
    }
}

/// What the server answers to a GET of /small, or nothing if it closed unserved.
async fn read_to_close_or_ok(stream: &mut TcpStream) -> String {
    let mut all = Vec::new();
    let mut buf = [0u8; 1024];
    while !all.ends_with(b"ok\n") {
        match stream.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => all.extend_from_slice(&buf[..n]),
        }
    }
    String::from_utf8_lossy(&all).into_owned()
}

#[tokio::test(start_paused = true)]
async fn a_client_that_stops_reading_its_response_is_dropped_at_the_stall_deadline() {
    let served = serve(1, None).await;
    // It asks for 64 MiB and reads none of it: the server's writes fill the socket buffers.
    let mut stalled = TcpStream::connect(served.addr).await.unwrap();
    send_get(&mut stalled, "/big").await.unwrap();
    // The only slot is held until the stalled connection is dropped: until then every
    // other client is turned away.
    let start = Instant::now();
    let response = get_small_once_served(served.addr, Duration::from_secs(1)).await;
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
    within(start.elapsed(), STALL);
}

#[tokio::test(start_paused = true)]
async fn a_stalled_tls_handshake_is_dropped_at_the_stall_deadline() {
    let key = rcgen::KeyPair::generate().unwrap();
    let cert = rcgen::CertificateParams::new(vec!["localhost".into()])
        .unwrap()
        .self_signed(&key)
        .unwrap();
    let config = capf_server::api::tls::config(
        vec![cert.der().clone()],
        rustls::pki_types::PrivateKeyDer::Pkcs8(key.serialize_der().into()),
    )
    .unwrap();
    let served = serve(8, Some(tokio_rustls::TlsAcceptor::from(config))).await;
    let mut client = TcpStream::connect(served.addr).await.unwrap();
    let start = Instant::now();
    read_to_close(&mut client).await;
    within(start.elapsed(), STALL);
}
