//! `capf phone`: plays a phone (or softphone) against any CAPF server.
//!
//! It does what the server asks: answers AUTH_REQUEST with its name and credentials,
//! generates the requested key, stores, returns or deletes its LSC, and reports how the
//! session ended. It trusts exactly the CAPF certificate it is given (pinned, no host name
//! check), as a phone trusts the CAPF entry of its CTL/ITL.
//!
//! `capf phone` and `capf bench` run the same session ([`run_with`]): they differ only in
//! where the TLS client configuration comes from (read once per process) and where the
//! phone's key comes from ([`KeySource`]: generated fresh, or taken from a pool made before
//! a benchmark's clock starts).

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rustls::pki_types::ServerName;
use rustls::ClientConfig;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;
use tokio_rustls::TlsConnector;

use capf_model::keyspec::KeySpec;
use capf_pki::ca::phone_key::PhoneKey;
use capf_proto::{
    AuthResponse, CertType, CertificateElement, DecodeError, Empty, FetchCertificateResponse,
    HashId, Header, KeyGenerateResponse, Message, Reason, ReasonOnly, Sha2SignedData, SudiData,
    HEADER_LEN,
};

pub const DEFAULT_PORT: u16 = 3804;

#[derive(Debug, thiserror::Error)]
pub enum PhoneError {
    #[error("cannot read {path}: {message}")]
    File { path: PathBuf, message: String },
    #[error("cannot connect to {host}: {source}")]
    Connect {
        host: String,
        source: std::io::Error,
    },
    #[error("TLS: {0}")]
    Tls(String),
    #[error("connection: {0}")]
    Io(#[from] std::io::Error),
    #[error("server sent a malformed frame: {0}")]
    Decode(#[from] DecodeError),
    #[error("protocol: {0}")]
    Protocol(String),
    #[error("key: {0}")]
    Key(String),
    #[error("timed out waiting for the server")]
    Timeout,
}

/// Test-only misbehaviours, to prove the server copes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Misbehave {
    #[default]
    None,
    /// Close the connection right after receiving the certificate, without answering.
    DropAfterCertificate,
    /// Answer STORE_CERTIFICATE_REQUEST with a failure.
    FailStore,
    /// Never answer KEY_GENERATE_REQUEST: wait until the server gives up.
    StallKeyGeneration,
}

#[derive(Debug, Clone)]
pub struct PhoneOptions {
    /// HOST or HOST:PORT.
    pub host: String,
    /// The CAPF certificate (PEM or DER) the phone trusts.
    pub capf_cert: PathBuf,
    pub device: String,
    pub auth_string: Option<String>,
    /// The phone's existing LSC (or MIC) and its key, PEM, for fetch/delete and certificate
    /// authentication.
    pub lsc: Option<PathBuf>,
    /// Authenticate with the certificate in `lsc` (CERTIFICATE + signatures).
    pub certificate_auth: bool,
    /// Where to write the new LSC and key.
    pub out: Option<PathBuf>,
    /// VERSION element to send.
    pub version: u8,
    /// Send REQUEST_IN_PROGRESS before the key, as phones do while generating RSA keys.
    pub request_in_progress: bool,
    /// Pretend key generation takes at least this long (a slow phone).
    pub keygen_delay: Duration,
    /// How long to wait for each server frame.
    pub timeout: Duration,
    pub misbehave: Misbehave,
    /// Local address to connect from.
    pub bind: Option<std::net::IpAddr>,
    /// SUDI certificate and its RSA key (PEM): adds SUDI_DATA to certificate authentication.
    pub sudi: Option<PathBuf>,
}

impl PhoneOptions {
    pub fn new(
        host: impl Into<String>,
        capf_cert: impl Into<PathBuf>,
        device: impl Into<String>,
    ) -> Self {
        PhoneOptions {
            host: host.into(),
            capf_cert: capf_cert.into(),
            device: device.into(),
            auth_string: None,
            lsc: None,
            certificate_auth: false,
            out: None,
            version: 3,
            request_in_progress: true,
            keygen_delay: Duration::ZERO,
            timeout: Duration::from_secs(30),
            misbehave: Misbehave::None,
            bind: None,
            sudi: None,
        }
    }
}

/// What happened, as the phone saw it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PhoneReport {
    /// END_SESSION reason, if the server sent one.
    pub end_reason: Option<Reason>,
    pub operation: Option<&'static str>,
    /// The certificate the server sent (PEM), and the key generated for it (PKCS#8 PEM).
    pub lsc_pem: Option<String>,
    pub key_pem: Option<String>,
    pub session_id: u32,
    pub timing: SessionTiming,
    /// Negotiated TLS version, cipher suite and key exchange group.
    pub tls: String,
}

/// Where a session's wall time went, as the phone saw it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct SessionTiming {
    /// TCP connect.
    pub connect: Duration,
    /// TLS handshake, after the TCP connect.
    pub handshake: Duration,
    /// From the start of the TCP connect to END_SESSION (or to the close).
    pub total: Duration,
    /// Time the phone itself spent between KEY_GENERATE_REQUEST and its answer: think time,
    /// key generation or taking a pooled key, and any hold. Not the server's doing.
    pub phone_wait: Duration,
}

impl SessionTiming {
    /// The server's share of the session: everything but the phone's own key wait.
    pub fn server_share(&self) -> Duration {
        self.total.saturating_sub(self.phone_wait)
    }
}

/// Where the phone's key comes from once the server asks for one.
#[async_trait::async_trait]
pub trait KeySource: Send + Sync {
    /// A key of `spec`. May take as long as the phone likes (it already sent
    /// REQUEST_IN_PROGRESS if it was going to).
    async fn key(&self, spec: KeySpec) -> Result<Arc<PhoneKey>, PhoneError>;
}

/// Generates a fresh key for every request, on the blocking pool: what a real phone does,
/// and what `capf phone` does.
#[derive(Debug, Clone, Copy, Default)]
pub struct FreshKeys;

#[async_trait::async_trait]
impl KeySource for FreshKeys {
    async fn key(&self, spec: KeySpec) -> Result<Arc<PhoneKey>, PhoneError> {
        tokio::task::spawn_blocking(move || PhoneKey::generate(spec))
            .await
            .map_err(|e| PhoneError::Key(e.to_string()))?
            .map(Arc::new)
            .map_err(|e| PhoneError::Key(e.to_string()))
    }
}

impl PhoneReport {
    /// A human summary of the outcome.
    pub fn summary(&self) -> String {
        let what = match (self.end_reason, self.operation) {
            (Some(Reason::UpdateCertificate), Some("install")) => "certificate installed",
            (Some(Reason::UpdateCertificate), Some("delete")) => "certificate deleted",
            (Some(Reason::NoAction), Some("fetch")) => "certificate fetched by the server",
            (Some(Reason::NoAction), _) => "nothing to do (no pending operation)",
            (Some(Reason::InvalidElement), _) => "refused or failed (END_SESSION 7)",
            (Some(Reason::UnknownDevice), _) => "unknown device (END_SESSION 9)",
            (Some(_), _) => "ended with an unknown reason",
            (None, _) => "connection closed without END_SESSION",
        };
        match self.end_reason {
            Some(r) => format!("{what}; END_SESSION reason {}", u8::from(r)),
            None => what.to_string(),
        }
    }

    /// Whether the session ended the way a healthy phone wants.
    pub fn succeeded(&self) -> bool {
        matches!(
            self.end_reason,
            Some(Reason::NoAction) | Some(Reason::UpdateCertificate)
        )
    }
}

/// The phone's existing certificate and key.
struct Existing {
    der: Vec<u8>,
    key: Option<PhoneKey>,
}

fn read(path: &PathBuf) -> Result<Vec<u8>, PhoneError> {
    std::fs::read(path).map_err(|e| PhoneError::File {
        path: path.clone(),
        message: e.to_string(),
    })
}

fn load_existing(path: &PathBuf) -> Result<Existing, PhoneError> {
    let text = String::from_utf8(read(path)?).map_err(|_| PhoneError::File {
        path: path.clone(),
        message: "not PEM text".into(),
    })?;
    let blocks = pem::parse_many(&text).map_err(|e| PhoneError::File {
        path: path.clone(),
        message: e.to_string(),
    })?;
    let der = blocks
        .iter()
        .find(|p| p.tag() == "CERTIFICATE")
        .map(|p| p.contents().to_vec())
        .ok_or_else(|| PhoneError::File {
            path: path.clone(),
            message: "no CERTIFICATE block".into(),
        })?;
    let key = match blocks.iter().find(|p| p.tag() == "PRIVATE KEY") {
        Some(p) => {
            Some(PhoneKey::from_pem(&pem::encode(p)).map_err(|e| PhoneError::Key(e.to_string()))?)
        }
        None => None,
    };
    Ok(Existing { der, key })
}

/// Reads a certificate file as PEM (first CERTIFICATE block) or DER.
pub fn read_certificate(path: &PathBuf) -> Result<Vec<u8>, PhoneError> {
    let bytes = read(path)?;
    if let Ok(blocks) = pem::parse_many(&bytes) {
        if let Some(p) = blocks.into_iter().find(|p| p.tag() == "CERTIFICATE") {
            return Ok(p.into_contents());
        }
    }
    Ok(bytes)
}

/// Opens a TLS connection that trusts exactly `capf_cert_der`.
pub async fn connect(
    host: &str,
    capf_cert_der: Vec<u8>,
) -> Result<TlsStream<TcpStream>, PhoneError> {
    connect_from(host, capf_cert_der, None).await
}

/// Like [`connect`], from a chosen local address (many simulated phones on one machine).
pub async fn connect_from(
    host: &str,
    capf_cert_der: Vec<u8>,
    bind: Option<std::net::IpAddr>,
) -> Result<TlsStream<TcpStream>, PhoneError> {
    let config = phone_client_config(capf_cert_der)?;
    let (stream, _) = connect_with(host, &config, bind).await?;
    Ok(stream)
}

/// HOST:PORT for `host`, adding the CAPF port when none is given.
pub fn with_default_port(host: &str) -> String {
    if host
        .rsplit_once(':')
        .is_some_and(|(_, p)| p.parse::<u16>().is_ok())
        && !host.ends_with(']')
    {
        host.to_string()
    } else {
        format!("{host}:{DEFAULT_PORT}")
    }
}

/// The TLS client configuration of a phone that trusts exactly `capf_cert_der`. Build it once
/// and share it: every session of a benchmark uses the same one.
///
/// Session resumption is off: every real phone is a distinct client that does a full
/// handshake, and a load generator that resumed would measure a cheaper handshake than
/// phones cause.
pub fn phone_client_config(capf_cert_der: Vec<u8>) -> Result<Arc<ClientConfig>, PhoneError> {
    let mut config = capf_server::pinned::pinned_client_config(capf_cert_der)
        .map_err(|e| PhoneError::Tls(e.to_string()))?;
    config.resumption = rustls::client::Resumption::disabled();
    Ok(Arc::new(config))
}

/// Opens a TLS connection with a prepared configuration; also returns how long the TCP
/// connect and the TLS handshake took.
pub async fn connect_with(
    host: &str,
    config: &Arc<ClientConfig>,
    bind: Option<std::net::IpAddr>,
) -> Result<(TlsStream<TcpStream>, SessionTiming), PhoneError> {
    let addr = with_default_port(host);
    let started = Instant::now();
    let tcp = open_tcp(&addr, bind)
        .await
        .map_err(|source| PhoneError::Connect {
            host: addr.clone(),
            source,
        })?;
    let connected = Instant::now();
    let _ = tcp.set_nodelay(true);
    // Phones do not match host names; any name will do for SNI-less verification.
    let name = ServerName::try_from("capf").map_err(|e| PhoneError::Tls(e.to_string()))?;
    let stream = TlsConnector::from(Arc::clone(config))
        .connect(name, tcp)
        .await
        .map_err(|e| PhoneError::Tls(e.to_string()))?;
    let timing = SessionTiming {
        connect: connected - started,
        handshake: connected.elapsed(),
        ..SessionTiming::default()
    };
    Ok((stream, timing))
}

/// "TLSv1_3 TLS13_AES_256_GCM_SHA384 X25519MLKEM768": what a connection negotiated.
fn negotiated(stream: &TlsStream<TcpStream>) -> String {
    let (_, conn) = stream.get_ref();
    let version = conn
        .protocol_version()
        .map(|v| format!("{v:?}"))
        .unwrap_or_else(|| "?".into());
    let suite = conn
        .negotiated_cipher_suite()
        .map(|s| format!("{:?}", s.suite()))
        .unwrap_or_else(|| "?".into());
    let group = conn
        .negotiated_key_exchange_group()
        .map(|g| format!("{:?}", g.name()))
        .unwrap_or_else(|| "?".into());
    format!("{version} {suite} {group}")
}

async fn open_tcp(addr: &str, bind: Option<std::net::IpAddr>) -> std::io::Result<TcpStream> {
    let Some(local) = bind else {
        return TcpStream::connect(addr).await;
    };
    let mut last = std::io::Error::new(std::io::ErrorKind::NotFound, "no address");
    for remote in tokio::net::lookup_host(addr).await? {
        let socket = if remote.is_ipv4() {
            tokio::net::TcpSocket::new_v4()?
        } else {
            tokio::net::TcpSocket::new_v6()?
        };
        socket.bind(std::net::SocketAddr::new(local, 0))?;
        match socket.connect(remote).await {
            Ok(stream) => return Ok(stream),
            Err(e) => last = e,
        }
    }
    Err(last)
}

/// Reads one whole frame: (session id, message).
pub async fn read_frame<S: tokio::io::AsyncRead + Unpin>(
    stream: &mut S,
    timeout: Duration,
) -> Result<(u32, Message), PhoneError> {
    let read = async {
        let mut head = [0u8; HEADER_LEN];
        stream.read_exact(&mut head).await?;
        let header = Header::decode(&head)?;
        let mut frame = head.to_vec();
        frame.resize(HEADER_LEN + usize::from(header.body_len), 0);
        stream.read_exact(&mut frame[HEADER_LEN..]).await?;
        Ok::<_, PhoneError>(Message::decode(&frame)?)
    };
    tokio::time::timeout(timeout, read)
        .await
        .map_err(|_| PhoneError::Timeout)?
}

async fn send<S: tokio::io::AsyncWrite + Unpin>(
    stream: &mut S,
    message: Message,
    session_id: u32,
) -> Result<(), PhoneError> {
    let frame = message
        .encode(session_id)
        .map_err(|e| PhoneError::Protocol(e.to_string()))?;
    stream.write_all(&frame).await?;
    stream.flush().await?;
    Ok(())
}

/// Runs one enrollment session, reading the CAPF certificate from `opts.capf_cert` and
/// generating a fresh key when asked: `capf phone`.
pub async fn run(opts: &PhoneOptions) -> Result<PhoneReport, PhoneError> {
    let config = phone_client_config(read_certificate(&opts.capf_cert)?)?;
    run_with(opts, &config, &FreshKeys).await
}

/// Runs one enrollment session with a prepared TLS configuration (`opts.capf_cert` is not
/// read) and keys from `keys`. The TCP connect and TLS handshake together get
/// `opts.timeout`, like every server frame.
pub async fn run_with(
    opts: &PhoneOptions,
    config: &Arc<ClientConfig>,
    keys: &dyn KeySource,
) -> Result<PhoneReport, PhoneError> {
    let existing = match &opts.lsc {
        Some(path) => Some(load_existing(path)?),
        None => None,
    };
    let started = Instant::now();
    let (stream, timing) =
        tokio::time::timeout(opts.timeout, connect_with(&opts.host, config, opts.bind))
            .await
            .map_err(|_| PhoneError::Timeout)??;
    let tls = negotiated(&stream);
    let connected = Connected {
        started,
        timing,
        tls,
    };
    session(opts, existing, stream, keys, connected).await
}

/// Runs one enrollment session over a stream the caller established (a TLS client of its
/// own, e.g. one forced to legacy TLS parameters), generating a fresh key when asked.
/// `opts.host`, `capf_cert` and `bind` are not used: the caller connected and verified the
/// server.
pub async fn run_on_stream<S>(opts: &PhoneOptions, stream: S) -> Result<PhoneReport, PhoneError>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    let existing = match &opts.lsc {
        Some(path) => Some(load_existing(path)?),
        None => None,
    };
    let connected = Connected {
        started: Instant::now(),
        timing: SessionTiming::default(),
        tls: "established by the caller".into(),
    };
    session(opts, existing, stream, &FreshKeys, connected).await
}

/// How the session's stream came to be, for the report.
struct Connected {
    started: Instant,
    timing: SessionTiming,
    tls: String,
}

/// The protocol part of a phone session, over any stream.
async fn session<S>(
    opts: &PhoneOptions,
    existing: Option<Existing>,
    mut stream: S,
    keys: &dyn KeySource,
    connected: Connected,
) -> Result<PhoneReport, PhoneError>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    let Connected {
        started,
        mut timing,
        tls,
    } = connected;
    let (session_id, first) = read_frame(&mut stream, opts.timeout).await?;
    if !matches!(first, Message::AuthRequest(_)) {
        return Err(PhoneError::Protocol(format!(
            "expected AUTH_REQUEST, got {}",
            first.name()
        )));
    }
    let mut response = AuthResponse {
        reason: Some(Reason::UpdateCertificate),
        version: Some(opts.version),
        device_name: Some(opts.device.clone()),
        password: Some(opts.auth_string.clone().unwrap_or_default()),
        ..Default::default()
    };
    if opts.certificate_auth {
        let existing = existing
            .as_ref()
            .ok_or_else(|| PhoneError::Key("certificate authentication needs --lsc".into()))?;
        let key = existing
            .key
            .as_ref()
            .ok_or_else(|| PhoneError::Key("the --lsc file holds no private key".into()))?;
        // Spec 5.4: the phone signs its name, a NUL and its certificate.
        let mut signed = opts.device.as_bytes().to_vec();
        signed.push(0);
        signed.extend_from_slice(&existing.der);
        response.certificate = Some(CertificateElement::single(
            CertType::Lsc,
            existing.der.clone(),
        ));
        response.signed_data = Some(
            key.sign_sha1(&signed)
                .map_err(|e| PhoneError::Key(e.to_string()))?,
        );
        response.sha2_signed_data = Some(Sha2SignedData {
            hash_id: HashId::Sha512,
            signature: key
                .sign_sha512(&signed)
                .map_err(|e| PhoneError::Key(e.to_string()))?,
        });
    }
    if let Some(path) = &opts.sudi {
        let sudi = load_existing(path)?;
        let key = sudi
            .key
            .as_ref()
            .ok_or_else(|| PhoneError::Key("the --sudi file holds no private key".into()))?;
        // Spec 5.5: the session id little-endian, then the SUDI certificate.
        let mut signed = session_id.to_le_bytes().to_vec();
        signed.extend_from_slice(&sudi.der);
        response.sudi = Some(SudiData {
            certificate: sudi.der.clone(),
            sha1_signature: key
                .sign_sha1(&signed)
                .map_err(|e| PhoneError::Key(e.to_string()))?,
            sha2_hash_id: HashId::Sha512,
            sha2_signature: key
                .sign_sha512(&signed)
                .map_err(|e| PhoneError::Key(e.to_string()))?,
        });
    }
    send(&mut stream, Message::AuthResponse(response), session_id).await?;

    let mut report = PhoneReport {
        end_reason: None,
        operation: None,
        lsc_pem: None,
        key_pem: None,
        session_id,
        timing: SessionTiming::default(),
        tls,
    };
    let mut key: Option<Arc<PhoneKey>> = None;
    loop {
        let (sid, message) = match read_frame(&mut stream, opts.timeout).await {
            Ok(frame) => frame,
            // The server closed without END_SESSION.
            Err(PhoneError::Io(e)) if e.kind() == std::io::ErrorKind::UnexpectedEof => {
                timing.total = started.elapsed();
                report.timing = timing;
                return Ok(report);
            }
            Err(e) => return Err(e),
        };
        if sid != session_id {
            return Err(PhoneError::Protocol(format!(
                "session id changed from {session_id:08x} to {sid:08x}"
            )));
        }
        match message {
            Message::KeyGenerateRequest(_) if opts.misbehave == Misbehave::StallKeyGeneration => {
                report.operation = Some("install");
                // Whatever the server does next (close, END_SESSION) ends the session.
                continue;
            }
            Message::KeyGenerateRequest(request) => {
                report.operation = Some("install");
                let asked = Instant::now();
                let spec = request.key_spec().ok_or_else(|| {
                    PhoneError::Protocol("KEY_GENERATE_REQUEST names no key".into())
                })?;
                if opts.request_in_progress {
                    send(
                        &mut stream,
                        Message::RequestInProgress(Empty::default()),
                        session_id,
                    )
                    .await?;
                }
                tokio::time::sleep(opts.keygen_delay).await;
                let generated = keys.key(spec).await?;
                let reply = KeyGenerateResponse {
                    public_key: Some(generated.spki_der()),
                    ..Default::default()
                };
                timing.phone_wait += asked.elapsed();
                key = Some(generated);
                send(&mut stream, Message::KeyGenerateResponse(reply), session_id).await?;
            }
            Message::StoreCertificateRequest(request) => {
                let der = request
                    .certificate
                    .as_ref()
                    .map(|c| c.first().der.clone())
                    .ok_or_else(|| {
                        PhoneError::Protocol("STORE_CERTIFICATE_REQUEST without CERTIFICATE".into())
                    })?;
                match opts.misbehave {
                    Misbehave::DropAfterCertificate => {
                        report.lsc_pem = Some(pem::encode(&pem::Pem::new("CERTIFICATE", der)));
                        timing.total = started.elapsed();
                        report.timing = timing;
                        return Ok(report);
                    }
                    Misbehave::FailStore => {
                        send(
                            &mut stream,
                            Message::StoreCertificateResponse(ReasonOnly::new(
                                Reason::InvalidElement,
                            )),
                            session_id,
                        )
                        .await?;
                        continue;
                    }
                    Misbehave::None | Misbehave::StallKeyGeneration => {}
                }
                report.lsc_pem = Some(pem::encode(&pem::Pem::new("CERTIFICATE", der)));
                report.key_pem = key.as_deref().map(PhoneKey::to_pkcs8_pem);
                if let Some(out) = &opts.out {
                    write_secret_file(
                        out,
                        &format!(
                            "{}{}",
                            report.lsc_pem.as_deref().unwrap_or_default(),
                            report.key_pem.as_deref().unwrap_or_default()
                        ),
                    )?;
                }
                send(
                    &mut stream,
                    Message::StoreCertificateResponse(ReasonOnly::new(Reason::UpdateCertificate)),
                    session_id,
                )
                .await?;
            }
            Message::FetchCertificateRequest(_) => {
                report.operation = Some("fetch");
                let reply = match &existing {
                    Some(e) => FetchCertificateResponse {
                        reason: Some(Reason::UpdateCertificate),
                        certificate: Some(CertificateElement::single(CertType::Lsc, e.der.clone())),
                        ..Default::default()
                    },
                    None => FetchCertificateResponse {
                        reason: Some(Reason::InvalidElement),
                        ..Default::default()
                    },
                };
                send(
                    &mut stream,
                    Message::FetchCertificateResponse(reply),
                    session_id,
                )
                .await?;
            }
            Message::DeleteCertificateRequest(_) => {
                report.operation = Some("delete");
                let answer = if existing.is_some() {
                    Reason::UpdateCertificate
                } else {
                    Reason::InvalidElement
                };
                send(
                    &mut stream,
                    Message::DeleteCertificateResponse(ReasonOnly::new(answer)),
                    session_id,
                )
                .await?;
            }
            Message::EndSession(end) => {
                report.end_reason = end.reason;
                timing.total = started.elapsed();
                report.timing = timing;
                let _ = stream.shutdown().await;
                return Ok(report);
            }
            other => {
                return Err(PhoneError::Protocol(format!(
                    "unexpected {} from the server",
                    other.name()
                )));
            }
        }
    }
}

/// Writes a file holding a private key: created 0600, never wider.
fn write_secret_file(path: &PathBuf, contents: &str) -> Result<(), PhoneError> {
    use std::io::Write;
    #[cfg(unix)]
    use std::os::unix::fs::OpenOptionsExt;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    options.mode(0o600);
    let mut file = options.open(path).map_err(|e| PhoneError::File {
        path: path.clone(),
        message: e.to_string(),
    })?;
    file.write_all(contents.as_bytes())
        .and_then(|_| file.sync_all())
        .map_err(|e| PhoneError::File {
            path: path.clone(),
            message: e.to_string(),
        })
}
