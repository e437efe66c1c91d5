//! `capf serve`: puts the pieces together and runs until SIGTERM/SIGINT.

use std::io::Write;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{error, info, warn};

use crate::api;
use crate::config::{LiveConfig, ServeArgs, Settings};
use crate::fds;
use crate::http::{self, HttpLimits};
use crate::logging::LogControl;
use crate::metrics::{Metrics, NoMetrics, Prometheus};
use crate::scrape::Scrape;
use crate::server::acceptor::Acceptor;
use crate::server::{self, Server};
use crate::service::Service;
use crate::supervise::supervise;
use crate::tokens;
use capf_model::clock::{Clock, SystemClock};
use capf_pki::auth::TrustAnchors;
use capf_pki::ca::identity::{CapfIdentity, Loaded};
use capf_pki::ca::lsc::Issuer;
use capf_store as store;

/// Serves until SIGTERM/SIGINT. `settings` were resolved from `args`; SIGHUP resolves them
/// again from the same `args` (the config file is read anew) and applies what may change
/// live, the log filter through `log`.
pub async fn serve(args: ServeArgs, settings: Settings, log: LogControl) -> anyhow::Result<()> {
    let mut signals = StopSignals::register();
    // Registered this early so a SIGHUP during start-up is not the default action (exit).
    let hangup = Hangup::register();
    let settings = Arc::new(settings);
    let clock: Arc<dyn Clock> = Arc::new(SystemClock);

    // Key files, the issuer and the manufacturer CAs are read (and a new key generated) on
    // the blocking pool, never on the async workers.
    let (identity, loaded, issuer, anchors) = {
        let settings = Arc::clone(&settings);
        tokio::task::spawn_blocking(move || load_keys(&settings))
            .await
            .context("key loading task failed")??
    };
    match loaded {
        Loaded::Created => warn!(
            subject = %identity.subject_string(),
            dir = %settings.certs_dir.display(),
            "NEW CAPF KEY AND CERTIFICATE GENERATED: phones trust only the CAPF certificate in \
             their CTL/ITL, so capf.pem must be added to the CTL/ITL files before phones can \
             enroll"
        ),
        Loaded::Existing => info!(subject = %identity.subject_string(), "CAPF identity loaded"),
    }

    info!(database = %settings.database_url, "opening database");
    let store = store::open(&settings.database_url)
        .await
        .context("database")?;

    let tls = server::tls::server_config(identity.cert_der(), identity.key_pkcs8_der())?;
    let prometheus = settings.metrics_listen.map(|_| Arc::new(Prometheus::new()));
    let metrics: Arc<dyn Metrics> = match &prometheus {
        Some(p) => Arc::clone(p) as Arc<dyn Metrics>,
        None => Arc::new(NoMetrics),
    };
    let service = Arc::new(Service::new(
        Arc::clone(&store),
        Arc::new(issuer),
        Arc::clone(&settings),
        anchors,
        metrics,
        Arc::clone(&clock),
    ));
    let server = Arc::new(Server::new(Arc::clone(&service)));
    let (acceptor, legacy_listener) = acceptors(&settings, &identity, tls)?;
    let listener = server::bind(settings.listen)
        .with_context(|| format!("cannot listen on {}", settings.listen))?;
    let local = listener.local_addr()?;
    info!(address = %local, node = %settings.node_id, "CAPF listener ready");
    // Scripts and tests read the bound address (the port may have been 0) from stdout.
    println!("capf listening on {local}");
    let legacy_listener = match legacy_listener {
        Some((addr, acceptor)) => {
            let listener = server::bind(addr)
                .with_context(|| format!("cannot listen on {addr} for legacy TLS"))?;
            let local = listener.local_addr()?;
            info!(address = %local, "legacy TLS listener ready");
            println!("capf legacy tls listening on {local}");
            Some((listener, acceptor))
        }
        None => None,
    };
    let _ = std::io::stdout().flush();

    // HTTP clients get capped shares of the descriptors; the rest stay for phone sessions.
    let fd_plan = fds::plan(
        fds::raise_limit(),
        settings.live.max_sessions,
        settings.api_max_connections,
        settings
            .metrics_listen
            .map(|_| settings.metrics_max_connections),
    );
    for warning in &fd_plan.warnings {
        warn!("{warning}");
    }
    info!(
        limit = fd_plan.limit,
        api = fd_plan.api,
        metrics = fd_plan.metrics,
        "open files"
    );

    let shutdown = CancellationToken::new();
    // Before the API: scripts take the API's line as "started".
    let metrics_endpoint = match (settings.metrics_listen, prometheus) {
        (Some(addr), Some(prometheus)) => Some(
            serve_metrics(
                addr,
                settings.http_limits(fd_plan.metrics),
                Arc::new(Scrape::new(prometheus, Arc::clone(&store))),
                shutdown.clone(),
            )
            .await?,
        ),
        _ => None,
    };
    let api = serve_api(
        &settings,
        settings.http_limits(fd_plan.api),
        &identity,
        Arc::clone(&store),
        Arc::clone(&service.live),
        Arc::clone(&clock),
        shutdown.clone(),
    )
    .await?;
    let tasks = TaskTracker::new();
    // Background tasks for the life of the service: a panic in one is logged and the task
    // restarted (supervise), never silently lost.
    let mut background = Vec::new();
    background.push(supervise("sweeper", shutdown.clone(), {
        let (store, clock, every, shutdown) = (
            Arc::clone(&store),
            Arc::clone(&clock),
            settings.sweep_interval,
            shutdown.clone(),
        );
        move || {
            sweep(
                Arc::clone(&store),
                Arc::clone(&clock),
                every,
                shutdown.clone(),
            )
        }
    }));
    background.push(supervise("housekeeping", shutdown.clone(), {
        let (server, shutdown) = (Arc::clone(&server), shutdown.clone());
        move || Arc::clone(&server).housekeeping(shutdown.clone())
    }));
    let mut accept = vec![tokio::spawn(Arc::clone(&server).serve(
        listener,
        acceptor,
        shutdown.clone(),
        tasks.clone(),
    ))];
    if let Some((listener, acceptor)) = legacy_listener {
        accept.push(tokio::spawn(Arc::clone(&server).serve(
            listener,
            acceptor,
            shutdown.clone(),
            tasks.clone(),
        )));
    }
    background.push(supervise("claim renewal", shutdown.clone(), {
        let (service, clock, shutdown) =
            (Arc::clone(&service), Arc::clone(&clock), shutdown.clone());
        move || renew_claims(Arc::clone(&service), Arc::clone(&clock), shutdown.clone())
    }));
    // The reloader owns the SIGHUP stream, so it cannot be rebuilt after a panic: it is
    // watched instead, and a panic there stops the server cleanly rather than leaving a
    // node that ignores reloads.
    let mut reloader = tokio::spawn(reload_on_hangup(
        hangup,
        Reloader {
            args,
            settings: Arc::clone(&settings),
            service: Arc::clone(&service),
            server: Arc::clone(&server),
            log,
            capf_der: identity.cert_der().to_vec(),
        },
    ));

    let mut reloader_running = true;
    loop {
        tokio::select! {
            _ = signals.recv() => {
                info!("shutting down: no new connections, letting sessions in flight finish");
                break;
            }
            ended = &mut reloader, if reloader_running => {
                // It returns when no SIGHUP can come (nothing is lost); it fails on a panic.
                reloader_running = false;
                if let Err(e) = ended {
                    error!(error = %e, "the SIGHUP reloader panicked; shutting down");
                    break;
                }
            }
        }
    }
    shutdown.cancel();
    for task in background {
        let _ = task.await;
    }
    for task in accept {
        let _ = task.await;
    }
    let _ = api.await;
    if let Some(metrics_endpoint) = metrics_endpoint {
        let _ = metrics_endpoint.await;
    }
    tasks.close();
    let drained = tokio::select! {
        _ = tasks.wait() => {
            info!("all sessions finished");
            true
        }
        _ = tokio::time::sleep(service.live.current().drain_timeout) => {
            warn!("drain deadline passed; exiting with sessions in flight");
            false
        }
        _ = signals.recv() => {
            warn!("second signal: exiting now");
            false
        }
    };
    if !drained {
        // The sessions cut short keep their operations pending; free them for the phones'
        // retries now rather than when the leases run out. Bounded: we are exiting.
        let prefix = service.claimant_prefix();
        let release = service.store.release_claims(&prefix);
        match tokio::time::timeout(Duration::from_secs(2), release).await {
            Ok(Ok(n)) => info!(count = n, "released the operations of cut sessions"),
            Ok(Err(e)) => warn!(error = %e, "could not release the operations of cut sessions"),
            Err(_) => warn!("releasing the operations of cut sessions timed out"),
        }
    }
    if settings.legacy().enabled() {
        // The final count: which phones still needed legacy TLS during this run.
        server.log_legacy_counts();
    }
    Ok(())
}

/// The acceptor of the main listener, and the address and acceptor of the legacy TLS
/// listener when one is configured.
type Acceptors = (Arc<Acceptor>, Option<(SocketAddr, Arc<Acceptor>)>);

/// Builds the TLS acceptors: rustls alone unless legacy TLS is configured (which settings
/// allow only in a `legacy-tls` build).
fn acceptors(
    settings: &Settings,
    identity: &CapfIdentity,
    tls: Arc<rustls::ServerConfig>,
) -> anyhow::Result<Acceptors> {
    #[cfg(feature = "legacy-tls")]
    if settings.legacy().enabled() {
        use crate::server::legacy::LegacyAcceptor;
        let legacy = Arc::new(
            LegacyAcceptor::new(identity.cert_der(), identity.key_pkcs8_der())
                .context("legacy TLS")?,
        );
        warn!(
            on_listen = settings.legacy_tls,
            listen = ?settings.legacy_tls_listen,
            "LEGACY TLS ENABLED: phones that need it get TLS 1.0/1.1, RSA key exchange (no \
             forward secrecy) and CBC suites; turn it off once no legacy handshakes are counted"
        );
        let main = if settings.legacy_tls {
            let profile = server::tls::modern_profile(&tls, identity.key_pkcs8_der())?;
            Acceptor::Sniff {
                modern: TlsAcceptor::from(tls),
                profile,
                legacy: Arc::clone(&legacy),
            }
        } else {
            Acceptor::Rustls(TlsAcceptor::from(tls))
        };
        let extra = settings
            .legacy_tls_listen
            .map(|addr| (addr, Arc::new(Acceptor::Legacy(legacy))));
        return Ok((Arc::new(main), extra));
    }
    // Without the feature, settings refuse legacy TLS, so there is nothing else to build.
    let _ = (settings, identity);
    Ok((Arc::new(Acceptor::Rustls(TlsAcceptor::from(tls))), None))
}

/// Starts the HTTP API (HTTPS beyond loopback or when asked for); returns its task.
async fn serve_api(
    settings: &Settings,
    limits: HttpLimits,
    identity: &CapfIdentity,
    store: Arc<dyn store::Store>,
    live: Arc<LiveConfig>,
    clock: Arc<dyn Clock>,
    shutdown: CancellationToken,
) -> anyhow::Result<tokio::task::JoinHandle<()>> {
    match tokens::bootstrap(store.as_ref(), &settings.data_dir, clock.as_ref()).await {
        Ok(Some(path)) => warn!(
            file = %path.display(),
            "admin API token created: the file holds the only copy of the secret"
        ),
        Ok(None) => {
            // Another node (or an earlier run) made the first token. Several nodes starting
            // together on an empty database land here all but one: say where the token is
            // rather than leave an operator looking for a file that was never written.
            let file = settings.data_dir.join(tokens::TOKEN_FILE);
            if !tokio::fs::try_exists(&file).await.unwrap_or(false) {
                info!(
                    file = %file.display(),
                    "admin API token not created here: the database already holds one, made \
                     by another node or an earlier run (its admin.token is in that node's data \
                     dir); copy that file here, or make one with `capf token create`"
                );
            }
        }
        Err(e) => return Err(e).context("creating the first admin API token"),
    }
    let certificate = {
        let dir = settings.certs_dir.clone();
        let hash = identity.subject_hash();
        tokio::task::spawn_blocking(move || api::PublishedCertificate::read(&dir, &hash))
            .await
            .context("certificate reading task failed")??
    };
    let transport = api::transport(
        settings.api_listen,
        settings.api_tls,
        settings.api_tls_files(),
    );
    let tls = match transport {
        api::ApiTransport::PlainHttp => None,
        api::ApiTransport::TlsFiles(cert, key) => {
            let (chain, key) = tokio::task::spawn_blocking(move || api::tls::load_pem(&cert, &key))
                .await
                .context("API key loading task failed")?
                .context("API TLS certificate")?;
            Some(api::tls::config(chain, key)?)
        }
        api::ApiTransport::TlsCapfIdentity => Some(api::tls::config(
            vec![identity.cert_der().to_vec().into()],
            rustls::pki_types::PrivateKeyDer::Pkcs8(identity.key_pkcs8_der().to_vec().into()),
        )?),
    };
    let listener = tokio::net::TcpListener::bind(settings.api_listen)
        .await
        .with_context(|| format!("cannot listen on {} for the API", settings.api_listen))?;
    let local = listener.local_addr()?;
    let router = api::router(api::ApiState {
        store,
        certificate,
        live,
        clock,
    });
    let scheme = if tls.is_some() { "https" } else { "http" };
    info!(address = %local, scheme, "HTTP API ready");
    println!("capf api listening on {local}");
    let _ = std::io::stdout().flush();
    let tls = tls.map(TlsAcceptor::from);
    Ok(tokio::spawn(http::serve(
        "api", listener, tls, router, limits, shutdown,
    )))
}

/// Starts the Prometheus endpoint (`GET /metrics`, plain HTTP, no token: bind it where only
/// the monitoring system reaches); returns its task.
async fn serve_metrics(
    addr: SocketAddr,
    limits: HttpLimits,
    scrape: Arc<Scrape>,
    shutdown: CancellationToken,
) -> anyhow::Result<tokio::task::JoinHandle<()>> {
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .with_context(|| format!("cannot listen on {addr} for metrics"))?;
    let local = listener.local_addr()?;
    info!(address = %local, "metrics endpoint ready");
    println!("capf metrics listening on {local}");
    let _ = std::io::stdout().flush();
    Ok(tokio::spawn(http::serve(
        "metrics",
        listener,
        None,
        scrape.router(),
        limits,
        shutdown,
    )))
}

/// Creates the data directory 0700, or makes an existing one 0700: it holds the database
/// (pending authentication strings) and the first admin token, whoever starts capf.
fn private_dir(dir: &std::path::Path) -> anyhow::Result<()> {
    use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .with_context(|| format!("cannot create data dir {}", dir.display()))?;
    let mode = std::fs::metadata(dir)
        .with_context(|| format!("cannot read data dir {}", dir.display()))?
        .permissions()
        .mode();
    if mode & 0o077 != 0 {
        match std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700)) {
            Ok(()) => warn!(
                dir = %dir.display(),
                was = format!("{:o}", mode & 0o777),
                "data dir was readable by others; made it 0700"
            ),
            // Not ours to change (a read-only mount, another owner): say so and go on.
            Err(e) => warn!(dir = %dir.display(), error = %e,
                            "data dir is readable by others and cannot be made 0700"),
        }
    }
    Ok(())
}

/// Creates the data dir (SQLite) and loads the CAPF identity (created if absent), the LSC
/// issuer and the trust anchors.
fn load_keys(settings: &Settings) -> anyhow::Result<(CapfIdentity, Loaded, Issuer, TrustAnchors)> {
    if !settings.database_url.is_postgres() {
        private_dir(&settings.data_dir)?;
    }
    let (identity, loaded) =
        CapfIdentity::load_or_create(&settings.certs_dir, &settings.identity())
            .context("CAPF identity")?;
    let issuer = match settings.issuer() {
        Some((cert, key)) => capf_pki::ca::identity::load_issuer(&cert, &key)
            .context("LSC issuer")?
            .refusing_key(identity.signer().public_key_spki_der()),
        None => identity.issuer().clone(),
    };
    let anchors = trust_anchors(settings, identity.cert_der(), issuer.cert_der())?;
    Ok((identity, loaded, issuer, anchors))
}

/// LSCs chain to the issuer (and to the CAPF certificate when a separate issuer signs);
/// MICs and SUDIs to the manufacturer CAs in `certs/mic-trust/`.
fn trust_anchors(
    settings: &Settings,
    capf_der: &[u8],
    issuer_der: &[u8],
) -> anyhow::Result<TrustAnchors> {
    let mut lsc_issuers = vec![issuer_der.to_vec()];
    if issuer_der != capf_der {
        lsc_issuers.push(capf_der.to_vec());
    }
    let dir = settings.certs_dir.join("mic-trust");
    let (manufacturer, warnings) = TrustAnchors::load_manufacturer_dir(&dir);
    for warning in &warnings {
        warn!(dir = %dir.display(), "{warning}");
    }
    info!(count = manufacturer.len(), dir = %dir.display(), "manufacturer CA certificates loaded");
    TrustAnchors::new(lsc_issuers, manufacturer).context("trust anchors")
}

/// SIGHUP, when it could be registered.
struct Hangup {
    #[cfg(unix)]
    signal: Option<tokio::signal::unix::Signal>,
}

impl Hangup {
    fn register() -> Hangup {
        #[cfg(unix)]
        {
            use tokio::signal::unix::{signal, SignalKind};
            let signal = signal(SignalKind::hangup()).ok();
            if signal.is_none() {
                warn!(
                    "cannot listen for SIGHUP: settings and trust anchors reload only on restart"
                );
            }
            Hangup { signal }
        }
        #[cfg(not(unix))]
        Hangup {}
    }

    /// The next SIGHUP; `None` when there will be none.
    async fn recv(&mut self) -> Option<()> {
        #[cfg(unix)]
        if let Some(signal) = self.signal.as_mut() {
            return signal.recv().await;
        }
        None
    }
}

/// What a SIGHUP reloads, and what it applies the result to.
struct Reloader {
    /// As given at start: flags and the environment stay, the config file is read again.
    args: ServeArgs,
    /// The settings at start; those that need a restart stay in force.
    settings: Arc<Settings>,
    service: Arc<Service>,
    server: Arc<Server>,
    log: LogControl,
    capf_der: Vec<u8>,
}

/// Each SIGHUP reloads the settings that may change live and the trust anchors, all or
/// nothing: a broken config file or anchor set is refused and the old ones kept.
async fn reload_on_hangup(mut hangup: Hangup, reloader: Reloader) {
    while hangup.recv().await.is_some() {
        match reloader.reload().await {
            Ok(summary) => info!("SIGHUP: reload done; {summary}"),
            Err(e) => error!(
                "SIGHUP: reload refused, the old settings and trust anchors stay in force: {e:#}"
            ),
        }
    }
}

impl Reloader {
    /// Reads and applies; returns what changed, for the log.
    async fn reload(&self) -> anyhow::Result<String> {
        let args = self.args.clone();
        let settings = Arc::clone(&self.settings);
        let capf_der = self.capf_der.clone();
        let issuer_der = self.service.issuer.cert_der().to_vec();
        // Files are read on the blocking pool, never on the async workers.
        let (new, anchors) = tokio::task::spawn_blocking(move || -> anyhow::Result<_> {
            let new = Settings::resolve(&args).context("settings")?;
            // From the running certs dir: a new one needs a restart.
            let anchors = trust_anchors(&settings, &capf_der, &issuer_der)?;
            Ok((new, anchors))
        })
        .await
        .context("reload task failed")??;
        for name in self.settings.needing_restart(&new) {
            warn!(
                setting = name,
                "SIGHUP: {name} changed but needs a restart; the running value stays in force"
            );
        }
        let old = self.service.live.current();
        if old.log_filter != new.live.log_filter {
            // Before anything else, so a failure here leaves everything as it was.
            self.log.set_filter(&new.live.log_filter)?;
        }
        self.server.apply(&new.live);
        self.service.live.replace(new.live.clone());
        self.service.replace_trust_anchors(anchors);
        let changes = old.changes(&new.live);
        Ok(if changes.is_empty() {
            "no setting changed".to_string()
        } else {
            let list: Vec<String> = changes.iter().map(ToString::to_string).collect();
            format!("settings changed: {}", list.join(", "))
        })
    }
}

/// Marks operations whose deadline passed, so listings are true without a phone connecting.
async fn sweep(
    store: Arc<dyn store::Store>,
    clock: Arc<dyn Clock>,
    every: Duration,
    shutdown: CancellationToken,
) {
    let mut interval = tokio::time::interval(every);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = interval.tick() => {}
        }
        let _ = sweep_once(store.as_ref(), clock.as_ref()).await;
    }
}

/// One pass of the sweeper: marks the operations whose deadline is before the clock's now.
/// Returns how many it marked; a database error is logged and counted as none.
pub async fn sweep_once(store: &dyn store::Store, clock: &dyn Clock) -> u64 {
    match store.expire_operations(clock.now()).await {
        Ok(0) => 0,
        Ok(n) => {
            info!(count = n, "operations past their deadline marked timed out");
            n
        }
        Err(e) => {
            error!(error = %e, "could not expire operations");
            0
        }
    }
}

/// The node's heartbeat on the operations its sessions hold (see `Settings::claim_lease`).
async fn renew_claims(service: Arc<Service>, clock: Arc<dyn Clock>, shutdown: CancellationToken) {
    let prefix = service.claimant_prefix();
    let lease = service.settings.claim_lease;
    let mut interval = tokio::time::interval(crate::service::claim_renew_every(lease));
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = interval.tick() => {}
        }
        // Renewing by prefix would also renew the claims of ended sessions that could not be
        // released: release those first, and renew only once none is left.
        if !service.retry_releases().await {
            warn!("could not release the claims of ended sessions; renewal skipped");
            continue;
        }
        let renewed = service
            .store
            .renew_claims(&prefix, clock.now(), lease)
            .await;
        if let Err(e) = renewed {
            warn!(error = %e, "could not renew this node's claims");
        }
    }
}

/// SIGTERM and SIGINT, registered first thing so a signal during start-up is not lost to
/// the default action.
struct StopSignals {
    #[cfg(unix)]
    term: Option<tokio::signal::unix::Signal>,
}

impl StopSignals {
    fn register() -> StopSignals {
        StopSignals {
            #[cfg(unix)]
            term: tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).ok(),
        }
    }

    async fn recv(&mut self) {
        #[cfg(unix)]
        if let Some(term) = self.term.as_mut() {
            tokio::select! {
                _ = term.recv() => {}
                _ = tokio::signal::ctrl_c() => {}
            }
            return;
        }
        let _ = tokio::signal::ctrl_c().await;
    }
}
