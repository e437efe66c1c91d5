//! Starts the real `capf serve` binary on loopback and runs the real `capf phone`.
#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use capf_store::{DatabaseUrl, Store};

pub(crate) const BIN: &str = env!("CARGO_BIN_EXE_capf");

/// A running `capf serve`; killed when dropped.
pub(crate) struct TestServer {
    pub child: Child,
    pub addr: String,
    /// Address of the HTTP API.
    pub api: String,
    /// Address of the legacy TLS listener, when `--legacy-tls-listen` started one.
    pub legacy: Option<String>,
    /// Address of the Prometheus endpoint, when `--metrics-listen` started one.
    pub metrics: Option<String>,
    pub dir: PathBuf,
    pub database_url: String,
    pub extra_args: Vec<String>,
    /// Open-file limit (soft and hard) the server runs under, when the test set one.
    pub nofile: Option<u64>,
}

impl TestServer {
    /// Starts a server whose data and certs live under `dir`.
    pub(crate) fn start(dir: &Path, database_url: &str, extra_args: &[&str]) -> TestServer {
        TestServer::start_with_nofile(dir, database_url, extra_args, None)
    }

    /// As [`TestServer::start`], the server's open-file limit (soft and hard) set to
    /// `nofile` when given, as `ulimit -n` or systemd's LimitNOFILE= would.
    pub(crate) fn start_with_nofile(
        dir: &Path,
        database_url: &str,
        extra_args: &[&str],
        nofile: Option<u64>,
    ) -> TestServer {
        let extra_args: Vec<String> = extra_args.iter().map(|s| s.to_string()).collect();
        let (child, addrs) = spawn(dir, database_url, &extra_args, nofile);
        TestServer {
            child,
            addr: addrs.capf,
            api: addrs.api,
            legacy: addrs.legacy,
            metrics: addrs.metrics,
            dir: dir.to_path_buf(),
            database_url: database_url.to_string(),
            extra_args,
            nofile,
        }
    }

    /// Starts a server that reads its settings from `dir/capf.toml`, written with `toml`
    /// first (flags in `extra_args` and those [`TestServer::start`] adds win over it).
    pub(crate) fn start_with_config(
        dir: &Path,
        database_url: &str,
        extra_args: &[&str],
        toml: &str,
    ) -> TestServer {
        let config = dir.join("capf.toml");
        std::fs::write(&config, toml).expect("write the config file");
        let config = config.to_str().expect("utf-8 path").to_string();
        let mut args: Vec<&str> = vec!["--config", &config];
        args.extend_from_slice(extra_args);
        TestServer::start(dir, database_url, &args)
    }

    /// Rewrites the config file of [`TestServer::start_with_config`] and sends SIGHUP;
    /// returns the log line that ends the reload ("reload done" or "reload refused").
    pub(crate) fn reload(&self, toml: &str) -> String {
        std::fs::write(self.dir.join("capf.toml"), toml).expect("write the config file");
        let ends = |log: &str| -> Vec<String> {
            log.lines()
                .filter(|l| l.contains("SIGHUP: reload "))
                .map(str::to_string)
                .collect()
        };
        let before = ends(&self.log()).len();
        let pid = self.child.id().to_string();
        let sent = Command::new("kill").args(["-HUP", &pid]).status();
        assert!(sent.is_ok_and(|s| s.success()), "kill -HUP failed");
        for _ in 0..400 {
            if let Some(line) = ends(&self.log()).into_iter().nth(before) {
                return line;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("no end of reload logged within 20 s; log:\n{}", self.log());
    }

    /// What the server has logged so far (every run in this directory).
    pub(crate) fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("server.log")).unwrap_or_default()
    }

    pub(crate) fn capf_pem(&self) -> PathBuf {
        self.dir.join("certs").join("capf.pem")
    }

    /// Stops the server with SIGTERM and waits for it.
    pub(crate) fn stop(&mut self) -> std::process::ExitStatus {
        let pid = self.child.id().to_string();
        let _ = Command::new("kill").args(["-TERM", &pid]).status();
        for _ in 0..200 {
            if let Ok(Some(status)) = self.child.try_wait() {
                return status;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        self.child.wait().expect("wait")
    }

    /// Stops and starts again on the same directories and database.
    pub(crate) fn restart(&mut self) {
        self.stop();
        let (child, addrs) = spawn(&self.dir, &self.database_url, &self.extra_args, self.nofile);
        self.child = child;
        self.addr = addrs.capf;
        self.api = addrs.api;
        self.legacy = addrs.legacy;
        self.metrics = addrs.metrics;
    }

    pub(crate) async fn store(&self) -> Arc<dyn Store> {
        capf_store::open(&DatabaseUrl::new(self.database_url.clone()).unwrap())
            .await
            .expect("open test store")
    }

    /// Kills the server with SIGKILL (no drain, no cleanup: a crash) and starts it again on
    /// the same directories and database. Given fixed `--listen`/`--api-listen` addresses,
    /// phones find it where it was.
    pub(crate) fn crash_and_restart(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let (child, addrs) = spawn(&self.dir, &self.database_url, &self.extra_args, self.nofile);
        self.child = child;
        self.addr = addrs.capf;
        self.api = addrs.api;
        self.legacy = addrs.legacy;
        self.metrics = addrs.metrics;
    }

    /// A `capf phone` command against this server, run in its directory.
    fn phone_command(&self, device: &str, args: &[&str]) -> Command {
        let mut command = Command::new(BIN);
        command
            .arg("phone")
            .args(["--host", &self.addr])
            .arg("--capf-cert")
            .arg(self.capf_pem())
            .args(["--timeout", "20"])
            .args(args)
            .arg(device)
            .current_dir(&self.dir);
        command
    }

    /// Runs `capf phone` against this server; returns (exit code, stdout + stderr).
    pub(crate) fn phone(&self, device: &str, args: &[&str]) -> (i32, String) {
        let out = self
            .phone_command(device, args)
            .output()
            .expect("run capf phone");
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        (out.status.code().unwrap_or(-1), text)
    }

    /// Starts `capf phone` against this server in the background, its output piped.
    pub(crate) fn spawn_phone(&self, device: &str, args: &[&str]) -> Child {
        self.phone_command(device, args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn capf phone")
    }

    /// Starts, in the background, a `capf phone` that takes `delay_ms` to generate its key,
    /// so its session holds the operation meanwhile.
    pub(crate) fn slow_phone(&self, device: &str, delay_ms: u64) -> Child {
        self.spawn_phone(device, &["--keygen-delay-ms", &delay_ms.to_string()])
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Sends a GET to the HTTP API; returns (status, body).
pub(crate) fn http_get(api: &str, path: &str) -> (u16, Vec<u8>) {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(api).expect("connect to the API");
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: capf\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut response = Vec::new();
    stream
        .read_to_end(&mut response)
        .expect("read the response");
    let split = response
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("end of headers");
    let head = String::from_utf8_lossy(&response[..split]).to_string();
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .expect("status code");
    assert!(
        !head
            .to_ascii_lowercase()
            .contains("transfer-encoding: chunked"),
        "chunked responses are not decoded by this helper"
    );
    (status, response[split + 4..].to_vec())
}

fn spawn(
    dir: &Path,
    database_url: &str,
    extra_args: &[String],
    nofile: Option<u64>,
) -> (Child, Addresses) {
    // Any port unless the test fixed one (a server restarted after a crash keeps its own).
    let given = |flag: &str| extra_args.iter().any(|a| a == flag);
    let mut command = match nofile {
        None => Command::new(BIN),
        Some(n) => {
            // sh sets the limit, then becomes capf: `sh -c SCRIPT N BIN serve ...`.
            let mut sh = Command::new("sh");
            sh.args(["-c", "ulimit -n \"$0\" && exec \"$@\"", &n.to_string(), BIN]);
            sh
        }
    };
    let mut child = command
        .arg("serve")
        .args(
            [("--listen", "127.0.0.1:0"), ("--api-listen", "127.0.0.1:0")]
                .iter()
                .filter(|(flag, _)| !given(flag))
                .flat_map(|(flag, value)| [*flag, *value]),
        )
        .arg("--data-dir")
        .arg(dir.join("data"))
        .arg("--certs-dir")
        .arg(dir.join("certs"))
        .args(["--database-url", database_url])
        .args(
            // Short defaults keep tests quick; a test may set its own.
            [("--handshake-timeout", "5"), ("--frame-timeout", "5")]
                .iter()
                .filter(|(flag, _)| !extra_args.iter().any(|a| a == flag))
                .flat_map(|(flag, value)| [*flag, *value]),
        )
        .args(extra_args)
        // Unset rather than "info" (the default): the environment would win over a
        // config file's log_filter.
        .env_remove("CAPF_LOG")
        .stdout(Stdio::piped())
        .stderr(Stdio::from(
            std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(dir.join("server.log"))
                .expect("server log"),
        ))
        .spawn()
        .expect("start capf serve");
    let stdout = child.stdout.take().expect("stdout");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut lines = BufReader::new(stdout).lines();
        while let Some(Ok(line)) = lines.next() {
            if let Some(addr) = line.strip_prefix("capf listening on ") {
                let _ = tx.send(("capf", addr.to_string()));
            } else if let Some(addr) = line.strip_prefix("capf legacy tls listening on ") {
                let _ = tx.send(("legacy", addr.to_string()));
            } else if let Some(addr) = line.strip_prefix("capf metrics listening on ") {
                let _ = tx.send(("metrics", addr.to_string()));
            } else if let Some(addr) = line.strip_prefix("capf api listening on ") {
                let _ = tx.send(("api", addr.to_string()));
            }
        }
    });
    // The legacy listener's and metrics endpoint's lines, when there are some, come before
    // the API's.
    let (mut capf, mut api, mut legacy, mut metrics) = (None, None, None, None);
    while capf.is_none() || api.is_none() {
        match rx.recv_timeout(Duration::from_secs(60)) {
            Ok(("capf", addr)) => capf = Some(addr),
            Ok(("legacy", addr)) => legacy = Some(addr),
            Ok(("metrics", addr)) => metrics = Some(addr),
            Ok((_, addr)) => api = Some(addr),
            Err(_) => {
                let _ = child.kill();
                let log = std::fs::read_to_string(dir.join("server.log")).unwrap_or_default();
                panic!("capf serve did not start; log:\n{log}");
            }
        }
    }
    let addrs = Addresses {
        capf: capf.unwrap_or_default(),
        api: api.unwrap_or_default(),
        legacy,
        metrics,
    };
    (child, addrs)
}

/// Where a started server listens.
struct Addresses {
    capf: String,
    api: String,
    legacy: Option<String>,
    metrics: Option<String>,
}
