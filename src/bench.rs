//! `capf bench`: a load generator for any CAPF server.
//!
//! It drives many simulated phones, each a real TLS client doing a full handshake (no
//! session resumption: real phones are distinct clients) and the whole CAPF exchange of
//! `capf phone`, and reports what the server sustained:
//!
//! - enrollments per second: successful sessions / wall time of the measured phase (first
//!   session start to last session end);
//! - the **server's share** of each successful session: its wall time from the start of the
//!   TCP connect to the receipt of END_SESSION, minus the time the phone itself spent
//!   between receiving KEY_GENERATE_REQUEST and sending its key (its deliberate think time,
//!   `--think-ms`, and taking a pooled key). What remains is the server's work, the network
//!   and the phone's small protocol and TLS work (the phone's share of the handshake
//!   included); p50/p95/p99/max, nearest rank;
//! - TLS handshake time separately (TCP connected to handshake done), and the TCP connect;
//! - failures by kind, and the server's memory (`--server-pid`).
//!
//! Everything that is not the server's work happens before the clock starts: devices are
//! scheduled through capf's bulk API (`--schedule`) or named in a file (`--devices`, for a
//! server that is not capf), phone keys are generated into a pool, the TLS configuration is
//! built once.
//!
//! With `--hold N`, N sessions are first opened and parked in the key-generation wait
//! (see [`hold`]); the measured phase runs while they are held, then they are released.

mod devices;
mod driver;
mod fds;
mod hold;
mod keypool;
mod memory;
mod outcome;
mod phones;
mod stats;

use std::io::IsTerminal;
use std::net::IpAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::{ArgGroup, Args, ValueEnum};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use serde::Serialize;

use crate::cli::ApiArgs;
use crate::client::ClientError;
use crate::phone::{self, PhoneError, PhoneOptions};
use capf_model::keyspec::KeySpec;
use devices::{DevicesError, Group, RunNames, Schedule};
use driver::Pace;
use fds::FdError;
use keypool::{KeyPool, KeyPoolError};
use memory::{MemoryError, ProcMemory};
use phones::Phones;
use stats::{round3, PhaseReport};

/// Descriptors kept aside for the API client, the runtime and standard streams.
const FD_MARGIN: u64 = 64;
/// Lets the server's allocator settle after the last held session arrived, before its
/// memory is read.
const SETTLE: Duration = Duration::from_millis(500);

/// Flags of `capf bench`.
#[derive(Debug, Clone, Args)]
#[command(group(ArgGroup::new("provisioning").required(true).args(["schedule", "devices"])))]
pub struct BenchArgs {
    /// CAPF server, HOST or HOST:PORT (port 3804 by default).
    #[arg(long)]
    pub host: String,
    /// The CAPF certificate to trust (capf.pem or capf.cer).
    #[arg(long)]
    pub capf_cert: PathBuf,
    /// Schedule an install for every simulated phone through capf's admin API (--api,
    /// --token...) before the clock starts. Names: SEP + 12 hex digits, unique per run.
    #[arg(long)]
    pub schedule: bool,
    #[command(flatten)]
    pub api: ApiArgs,
    /// Device names to use instead, one per line, scheduled elsewhere (for a server that is
    /// not capf). The first --hold names are held, the next --phones measured.
    #[arg(long, value_name = "FILE")]
    pub devices: Option<PathBuf>,
    /// Phones (sessions) in the measured phase [default: 1000, or every name of --devices
    /// not held].
    #[arg(long)]
    pub phones: Option<usize>,
    /// Sessions in progress at once.
    #[arg(long, default_value_t = 32)]
    pub concurrency: usize,
    /// Open loop: start this many sessions per second (still at most --concurrency at
    /// once); without it, each session starts as soon as a slot is free.
    #[arg(long)]
    pub rate: Option<f64>,
    /// The phones' key type, scheduled and pooled: rsa-1024, rsa-2048, rsa-3072, rsa-4096,
    /// ec-p256, ec-p384 or ec-p521.
    #[arg(long, default_value = "rsa-2048")]
    pub key: KeySpec,
    /// Authentication mode to schedule.
    #[arg(long, value_enum, default_value_t = AuthModeArg::Null)]
    pub auth_mode: AuthModeArg,
    /// Authentication string (4-10 digits): scheduled with --auth-mode string, and typed
    /// on every phone.
    #[arg(long, required_if_eq("auth_mode", "string"))]
    pub auth_string: Option<String>,
    /// Key-generation think time: after REQUEST_IN_PROGRESS the phone waits this long
    /// before sending its key, holding its session open (left out of the server's share).
    #[arg(long, default_value_t = 0)]
    pub think_ms: u64,
    /// VERSION element the phones announce (Jabber sends 2).
    #[arg(long, default_value_t = 3)]
    pub protocol_version: u8,
    /// Local address to connect from.
    #[arg(long)]
    pub bind: Option<IpAddr>,
    /// Seconds to wait for the connect and handshake, and for each server frame.
    #[arg(long, default_value_t = 30)]
    pub timeout: u64,
    /// Phone keys generated before the clock starts, reused round-robin.
    #[arg(long, default_value_t = 64)]
    pub key_pool: usize,
    /// First open this many sessions and hold them in the key-generation wait while the
    /// measured phase runs; then release them (they send their keys and enroll).
    #[arg(long, default_value_t = 0)]
    pub hold: usize,
    /// The server's process id, to report its memory (VmRSS, VmHWM) from /proc.
    #[arg(long)]
    pub server_pid: Option<u32>,
    /// Print the report as JSON (no progress bar).
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum AuthModeArg {
    /// Null string: no authentication string.
    Null,
    /// Authentication string (--auth-string).
    String,
}

/// Why the benchmark could not run (as opposed to sessions failing, which it reports).
#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    #[error("{0}")]
    Usage(String),
    #[error(transparent)]
    Phone(#[from] PhoneError),
    #[error("cannot resolve {host}: {message}")]
    Resolve { host: String, message: String },
    #[error(transparent)]
    Devices(#[from] DevicesError),
    #[error("admin API: {0}")]
    Api(#[from] ClientError),
    #[error(transparent)]
    KeyPool(#[from] KeyPoolError),
    #[error(transparent)]
    Memory(#[from] MemoryError),
    #[error(transparent)]
    Fds(#[from] FdError),
}

/// What a run found.
#[derive(Debug, Clone, Serialize)]
pub struct BenchReport {
    /// The address the phones connected to.
    pub target: String,
    pub settings: SettingsReport,
    pub devices: DevicesReport,
    pub key_pool: KeyPoolReport,
    pub measured: PhaseReport,
    pub hold: Option<HoldReport>,
    pub server: Option<ServerReport>,
    /// RLIMIT_NOFILE in force (the soft limit, raised to the hard limit).
    pub open_files_limit: u64,
}

#[derive(Debug, Clone, Serialize)]
pub struct SettingsReport {
    pub phones: usize,
    pub concurrency: usize,
    pub rate: Option<f64>,
    pub key: KeySpec,
    pub auth_mode: AuthModeArg,
    pub think_ms: u64,
    pub protocol_version: u8,
    pub timeout_seconds: u64,
    pub hold: usize,
}

#[derive(Debug, Clone, Serialize)]
pub struct DevicesReport {
    /// "schedule" or "file".
    pub source: &'static str,
    /// With --schedule: what every measured (held) device name starts with.
    pub measured_prefix: Option<String>,
    pub held_prefix: Option<String>,
    /// Operations scheduled through the API.
    pub scheduled: u64,
    pub schedule_seconds: f64,
}

#[derive(Debug, Clone, Serialize)]
pub struct KeyPoolReport {
    pub key: KeySpec,
    pub keys: usize,
    pub seconds: f64,
}

#[derive(Debug, Clone, Serialize)]
pub struct HoldReport {
    pub requested: u64,
    /// Sessions that reached the key-generation wait.
    pub held: u64,
    /// Held sessions that enrolled once released: the server kept them alive.
    pub kept_alive: u64,
    pub released_by: &'static str,
    /// Time to open and hold them all.
    pub open_seconds: f64,
    /// (server RSS with every session held - RSS before) / held, with --server-pid.
    pub rss_per_held_session_kib: Option<f64>,
    /// Every held session's outcome (failures to open included), timed from the release.
    pub sessions: PhaseReport,
}

#[derive(Debug, Clone, Serialize)]
pub struct ServerReport {
    pub pid: u32,
    /// Before any session (after scheduling and the key pool).
    pub rss_before_kib: u64,
    /// With every held session open, before the measured phase.
    pub rss_held_kib: Option<u64>,
    /// After the measured phase (held sessions still open).
    pub rss_after_measured_kib: u64,
    /// At the end, everything released.
    pub rss_after_kib: u64,
    /// VmHWM at the end: the peak over the server's whole life, not just this run.
    pub peak_kib: u64,
}

impl BenchReport {
    /// Every session enrolled (measured and held).
    pub fn all_enrolled(&self) -> bool {
        self.measured.failed == 0
            && self
                .hold
                .as_ref()
                .is_none_or(|h| h.sessions.failed == 0 && h.kept_alive == h.requested)
    }
}

/// `capf bench`: 0 when every enrollment succeeded, 1 when any failed, 2 when the
/// benchmark could not run.
pub async fn main(args: BenchArgs) -> ExitCode {
    match run(&args).await {
        Ok(report) => {
            if args.json {
                match serde_json::to_string_pretty(&report) {
                    Ok(text) => println!("{text}"),
                    Err(e) => {
                        eprintln!("capf bench: cannot encode the report: {e}");
                        return ExitCode::from(2);
                    }
                }
            } else {
                print!("{}", human(&report));
            }
            if report.all_enrolled() {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            }
        }
        Err(e) => {
            eprintln!("capf bench: {e}");
            ExitCode::from(2)
        }
    }
}

/// Runs the benchmark `args` describes.
pub async fn run(args: &BenchArgs) -> Result<BenchReport, BenchError> {
    check(args)?;
    let needed = (args.concurrency + args.hold) as u64 + FD_MARGIN;
    let open_files_limit = fds::ensure(needed)?;
    let config = phone::phone_client_config(phone::read_certificate(&args.capf_cert)?)?;
    let target = resolve(&args.host).await?;
    let before_anything = args.server_pid.map(memory::read).transpose()?;
    let show = !args.json && std::io::stderr().is_terminal();

    // Devices.
    let started = Instant::now();
    let (held_names, measured_names, devices) = if args.schedule {
        let run = RunNames::random();
        let held = run.names(Group::Held, args.hold)?;
        let measured = run.names(Group::Measured, args.phones.unwrap_or(1000))?;
        let schedule = Schedule {
            key: args.key,
            auth_string: match args.auth_mode {
                AuthModeArg::String => args.auth_string.clone(),
                AuthModeArg::Null => None,
            },
        };
        let client = args.api.client()?;
        let spinner = spinner(show, "scheduling the devices");
        let scheduled = devices::schedule(&client, &held, &schedule).await?
            + devices::schedule(&client, &measured, &schedule).await?;
        spinner.finish_and_clear();
        let report = DevicesReport {
            source: "schedule",
            measured_prefix: Some(run.prefix(Group::Measured)),
            held_prefix: (args.hold > 0).then(|| run.prefix(Group::Held)),
            scheduled,
            schedule_seconds: round3(started.elapsed().as_secs_f64()),
        };
        (held, measured, report)
    } else {
        let path = args.devices.clone().unwrap_or_default();
        let mut names = devices::read_file(&path)?;
        let phones = args
            .phones
            .unwrap_or_else(|| names.len().saturating_sub(args.hold));
        let need = phones + args.hold;
        if names.len() < need || phones == 0 {
            return Err(DevicesError::TooFew {
                path,
                have: names.len(),
                need: need.max(args.hold + 1),
            }
            .into());
        }
        names.truncate(need);
        let measured = names.split_off(args.hold);
        let report = DevicesReport {
            source: "file",
            measured_prefix: None,
            held_prefix: None,
            scheduled: 0,
            schedule_seconds: 0.0,
        };
        (names, measured, report)
    };
    let phones_count = measured_names.len();

    // Keys.
    let started = Instant::now();
    let spinner = spinner(show, "generating phone keys");
    let pool_size = args.key_pool.min(phones_count + held_names.len()).max(1);
    let pool = Arc::new(KeyPool::generate(args.key, pool_size).await?);
    spinner.finish_and_clear();
    let key_pool = KeyPoolReport {
        key: pool.spec(),
        keys: pool.size(),
        seconds: round3(started.elapsed().as_secs_f64()),
    };

    let mut template = PhoneOptions::new(target.clone(), &args.capf_cert, String::new());
    template.auth_string = args.auth_string.clone();
    template.version = args.protocol_version;
    template.keygen_delay = Duration::from_millis(args.think_ms);
    template.timeout = Duration::from_secs(args.timeout.max(1));
    template.bind = args.bind;
    let phones = Arc::new(Phones::new(template, config, Arc::clone(&pool)));

    // The clock starts: held sessions first.
    let rss_before = match args.server_pid {
        Some(pid) => Some(memory::read(pid)?),
        None => before_anything,
    };
    let mut holding = None;
    let mut rss_held = None;
    if !held_names.is_empty() {
        let bar = progress(show, held_names.len(), "holding");
        let opened = hold::open(&phones, held_names, args.concurrency, &bar).await;
        bar.finish_and_clear();
        if let Some(pid) = args.server_pid {
            tokio::time::sleep(SETTLE).await;
            rss_held = Some(memory::read(pid)?);
        }
        holding = Some(opened);
    }

    let bar = progress(show, phones_count, "enrolling");
    let pace = Pace {
        concurrency: args.concurrency,
        rate: args.rate,
    };
    let measured = driver::run(&phones, measured_names, pace, &bar).await;
    bar.finish_and_clear();
    let rss_after_measured = args.server_pid.map(memory::read).transpose()?;

    let hold = match holding {
        Some(holding) => {
            let bar = progress(show, holding.requested() as usize, "releasing");
            let held = holding.held();
            let requested = holding.requested();
            let open_seconds = round3(holding.open_wall().as_secs_f64());
            let sessions = holding.release(&bar).await;
            bar.finish_and_clear();
            let rss_per_held_session_kib = match (rss_before, rss_held) {
                (Some(before), Some(during)) if held > 0 => Some(round3(
                    (during.rss_kib as f64 - before.rss_kib as f64) / held as f64,
                )),
                _ => None,
            };
            Some(HoldReport {
                requested,
                held,
                kept_alive: sessions.succeeded,
                released_by: "sending the key: each held session completes its enrollment",
                open_seconds,
                rss_per_held_session_kib,
                sessions,
            })
        }
        None => None,
    };

    let server = match (args.server_pid, rss_before, rss_after_measured) {
        (Some(pid), Some(before), Some(after_measured)) => {
            let end = memory::read(pid)?;
            Some(server_report(pid, before, rss_held, after_measured, end))
        }
        _ => None,
    };

    Ok(BenchReport {
        target,
        settings: SettingsReport {
            phones: phones_count,
            concurrency: args.concurrency,
            rate: args.rate,
            key: args.key,
            auth_mode: args.auth_mode,
            think_ms: args.think_ms,
            protocol_version: args.protocol_version,
            timeout_seconds: args.timeout.max(1),
            hold: args.hold,
        },
        devices,
        key_pool,
        measured,
        hold,
        server,
        open_files_limit,
    })
}

fn server_report(
    pid: u32,
    before: ProcMemory,
    held: Option<ProcMemory>,
    after_measured: ProcMemory,
    end: ProcMemory,
) -> ServerReport {
    ServerReport {
        pid,
        rss_before_kib: before.rss_kib,
        rss_held_kib: held.map(|m| m.rss_kib),
        rss_after_measured_kib: after_measured.rss_kib,
        rss_after_kib: end.rss_kib,
        peak_kib: end.peak_kib,
    }
}

/// Refuses what cannot make a meaningful run, before anything is scheduled.
fn check(args: &BenchArgs) -> Result<(), BenchError> {
    let usage = |m: &str| Err(BenchError::Usage(m.to_string()));
    if args.concurrency == 0 {
        return usage("--concurrency must be at least 1");
    }
    if args.phones == Some(0) {
        return usage("--phones must be at least 1");
    }
    if let Some(rate) = args.rate {
        if !(rate.is_finite() && rate > 0.0) {
            return usage("--rate must be a positive number of sessions per second");
        }
    }
    if let Some(s) = &args.auth_string {
        if !(4..=10).contains(&s.len()) || !s.bytes().all(|b| b.is_ascii_digit()) {
            return usage("--auth-string must be 4 to 10 digits");
        }
    }
    if args.auth_mode == AuthModeArg::String && args.auth_string.is_none() {
        return usage("--auth-mode string needs --auth-string");
    }
    if args.key_pool == 0 {
        return usage("--key-pool must be at least 1");
    }
    Ok(())
}

/// Resolves the host once, so no session spends time (or a blocking thread) on it.
async fn resolve(host: &str) -> Result<String, BenchError> {
    let with_port = phone::with_default_port(host);
    let resolved = tokio::net::lookup_host(&with_port)
        .await
        .map(|mut addrs| addrs.next());
    match resolved {
        Ok(Some(addr)) => Ok(addr.to_string()),
        Ok(None) => Err(BenchError::Resolve {
            host: with_port,
            message: "no address".into(),
        }),
        Err(e) => Err(BenchError::Resolve {
            host: with_port,
            message: e.to_string(),
        }),
    }
}

fn progress(show: bool, len: usize, what: &str) -> ProgressBar {
    if !show {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::with_draw_target(Some(len as u64), ProgressDrawTarget::stderr());
    bar.set_style(
        ProgressStyle::with_template(
            "{prefix:10} [{bar:40}] {pos}/{len} {per_sec} ({eta} left) {msg}",
        )
        .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    bar.set_prefix(what.to_string());
    bar
}

fn spinner(show: bool, what: &str) -> ProgressBar {
    if !show {
        return ProgressBar::hidden();
    }
    let spinner = ProgressBar::new_spinner();
    spinner.set_message(what.to_string());
    spinner.enable_steady_tick(Duration::from_millis(120));
    spinner
}

fn latency_line(label: &str, p: Option<&stats::Percentiles>) -> String {
    match p {
        Some(p) => format!(
            "  {label:<15} p50 {:.1} ms  p95 {:.1} ms  p99 {:.1} ms  max {:.1} ms  (n={})\n",
            p.p50_ms, p.p95_ms, p.p99_ms, p.max_ms, p.samples
        ),
        None => format!("  {label:<15} no samples\n"),
    }
}

fn errors_lines(phase: &PhaseReport) -> String {
    if phase.errors.is_empty() {
        return "  errors          none\n".into();
    }
    let mut out = String::new();
    for e in &phase.errors {
        out.push_str(&format!(
            "  error {:<24} {:>7}  first: {}\n",
            e.kind, e.count, e.example
        ));
    }
    out
}

fn mib(kib: u64) -> String {
    format!("{:.1} MiB", kib as f64 / 1024.0)
}

/// The report for people.
pub fn human(r: &BenchReport) -> String {
    let s = &r.settings;
    let m = &r.measured;
    let mut out = format!(
        "capf bench against {}: {} phones, {} key, {} auth, concurrency {}{}{}\n",
        r.target,
        s.phones,
        s.key,
        match s.auth_mode {
            AuthModeArg::Null => "null-string",
            AuthModeArg::String => "string",
        },
        s.concurrency,
        s.rate
            .map(|rate| format!(", rate {rate}/s"))
            .unwrap_or_default(),
        if s.think_ms > 0 {
            format!(", think {} ms", s.think_ms)
        } else {
            String::new()
        }
    );
    out.push_str(&format!(
        "  setup           {} devices scheduled in {:.2} s; {} {} keys in {:.2} s\n",
        r.devices.scheduled,
        r.devices.schedule_seconds,
        r.key_pool.keys,
        r.key_pool.key,
        r.key_pool.seconds
    ));
    out.push_str(&format!(
        "  enrollments     {} attempted, {} succeeded, {} failed in {:.3} s: {:.1} enrollments/s\n",
        m.attempted, m.succeeded, m.failed, m.wall_seconds, m.enrollments_per_second
    ));
    out.push_str(&latency_line("server share", m.server_share.as_ref()));
    out.push_str(&latency_line("TCP connect", m.connect.as_ref()));
    out.push_str(&latency_line("TLS handshake", m.handshake.as_ref()));
    if s.rate.is_some() {
        out.push_str(&latency_line("start lag", m.start_lag.as_ref()));
    }
    if let Some(tls) = &m.tls {
        out.push_str(&format!("  TLS             {tls}\n"));
    }
    out.push_str(&errors_lines(m));
    if let Some(h) = &r.hold {
        out.push_str(&format!(
            "  held sessions   {} of {} held (opened in {:.2} s), {} kept alive and enrolled after release\n",
            h.held, h.requested, h.open_seconds, h.kept_alive
        ));
        if let Some(per) = h.rss_per_held_session_kib {
            out.push_str(&format!(
                "  held memory     {per:.1} KiB of server RSS per held session\n"
            ));
        }
        if !h.sessions.errors.is_empty() {
            out.push_str(&errors_lines(&h.sessions).replace("  error ", "  held error "));
        }
    }
    if let Some(srv) = &r.server {
        out.push_str(&format!(
            "  server RSS      before {}, {}after measured {}, end {}, peak (lifetime) {}\n",
            mib(srv.rss_before_kib),
            srv.rss_held_kib
                .map(|k| format!("held {}, ", mib(k)))
                .unwrap_or_default(),
            mib(srv.rss_after_measured_kib),
            mib(srv.rss_after_kib),
            mib(srv.peak_kib)
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        bench: BenchArgs,
    }

    fn parse(extra: &[&str]) -> Result<BenchArgs, clap::Error> {
        let mut argv = vec!["bench", "--host", "127.0.0.1", "--capf-cert", "capf.pem"];
        argv.extend_from_slice(extra);
        Cli::try_parse_from(argv).map(|c| c.bench)
    }

    #[test]
    fn flags_and_their_checks() {
        let args = parse(&["--schedule"]).unwrap();
        assert_eq!(args.key, KeySpec::Rsa(2048));
        assert_eq!((args.concurrency, args.key_pool, args.hold), (32, 64, 0));
        assert!(check(&args).is_ok());
        // Exactly one way to get devices.
        assert!(parse(&[]).is_err());
        assert!(parse(&["--schedule", "--devices", "d.txt"]).is_err());
        assert!(parse(&["--schedule", "--key", "rsa-512"]).is_err());
        assert!(parse(&["--schedule", "--auth-mode", "string"]).is_err());
        let args = parse(&["--schedule", "--auth-mode", "string", "--auth-string", "12"]).unwrap();
        assert!(matches!(check(&args), Err(BenchError::Usage(_))));
        for bad in [
            &["--schedule", "--rate", "0"][..],
            &["--schedule", "--rate", "NaN"],
            &["--schedule", "--concurrency", "0"],
            &["--schedule", "--phones", "0"],
            &["--schedule", "--key-pool", "0"],
        ] {
            let args = parse(bad).unwrap();
            assert!(check(&args).is_err(), "{bad:?}");
        }
    }
}
