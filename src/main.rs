use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};

use capf::cli::{ApiArgs, OpCommand, TokenCommand};
use capf::phone::{Misbehave, PhoneOptions};
use capf_proto::Reason;
use capf_server::config::{ServeArgs, Settings};

/// capf: Certificate Authority Proxy Function server for Cisco IP phones.
#[derive(Parser)]
#[command(version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the CAPF server (TLS on port 3804).
    Serve(Box<ServeArgs>),
    /// Play a phone against any CAPF server.
    Phone(PhoneArgs),
    /// Load-test any CAPF server with many simulated phones.
    ///
    /// Reports enrollments per second, the server's share of each session's latency, TLS
    /// handshake times, failures by kind and (--server-pid) the server's memory. Exit
    /// status: 0 when every enrollment succeeded, 1 when any failed, 2 when the benchmark
    /// could not run.
    Bench(Box<capf::bench::BenchArgs>),
    /// Certificate operations through the admin API.
    Op {
        #[command(flatten)]
        api: ApiArgs,
        #[command(subcommand)]
        command: OpCommand,
    },
    /// The CAPF report (CSV) through the admin API.
    Report {
        #[command(flatten)]
        api: ApiArgs,
        /// Write to this file instead of stdout.
        #[arg(long)]
        out: Option<PathBuf>,
    },
    /// Clear a device's authentication lock through the admin API.
    Unlock {
        #[command(flatten)]
        api: ApiArgs,
        device: String,
    },
    /// Manage admin API tokens (on the database directly).
    Token {
        #[command(subcommand)]
        command: TokenCommand,
    },
}

#[derive(clap::Args)]
struct PhoneArgs {
    /// CAPF server, HOST or HOST:PORT (port 3804 by default).
    #[arg(long)]
    host: String,
    /// The CAPF certificate to trust (capf.pem or capf.cer).
    #[arg(long)]
    capf_cert: PathBuf,
    /// Device name, e.g. SEP001122334455.
    device: String,
    /// Authentication string typed on the phone.
    #[arg(long)]
    auth_string: Option<String>,
    /// The phone's existing LSC (or MIC) with its private key (PEM).
    #[arg(long)]
    lsc: Option<PathBuf>,
    /// Authenticate with the certificate given by --lsc.
    #[arg(long, requires = "lsc")]
    cert_auth: bool,
    /// Where to write the new LSC and its key [default: DEVICE.pem].
    #[arg(long)]
    out: Option<PathBuf>,
    /// VERSION element to announce (Jabber sends 2).
    #[arg(long, default_value_t = 3)]
    protocol_version: u8,
    /// Do not send REQUEST_IN_PROGRESS while generating the key.
    #[arg(long)]
    no_request_in_progress: bool,
    /// Take at least this many milliseconds to generate the key (a slow phone).
    #[arg(long, default_value_t = 0)]
    keygen_delay_ms: u64,
    /// Seconds to wait for each server frame.
    #[arg(long, default_value_t = 30)]
    timeout: u64,
    /// Local address to connect from.
    #[arg(long)]
    bind: Option<std::net::IpAddr>,
    /// SUDI certificate and RSA key (PEM) to add to certificate authentication.
    #[arg(long, requires = "cert_auth")]
    sudi: Option<PathBuf>,
    /// Testing: close the connection right after receiving the certificate.
    #[arg(long, hide = true)]
    drop_after_certificate: bool,
    /// Testing: answer the certificate with a store failure.
    #[arg(long, hide = true)]
    fail_store: bool,
    /// Testing: never answer the key generation request.
    #[arg(long, hide = true)]
    stall_keygen: bool,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("capf: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match cli.command {
        Command::Serve(args) => {
            let settings = match Settings::resolve(&args) {
                Ok(s) => s,
                Err(e) => {
                    eprintln!("capf: {e}");
                    return ExitCode::from(2);
                }
            };
            let (log, _flush) =
                match capf_server::logging::init(settings.log_format, &settings.live.log_filter) {
                    Ok(log) => log,
                    Err(e) => {
                        eprintln!("capf: {e}");
                        return ExitCode::FAILURE;
                    }
                };
            match runtime.block_on(capf_server::app::serve(*args, settings, log)) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    tracing::error!("{e:#}");
                    eprintln!("capf: {e:#}");
                    ExitCode::FAILURE
                }
            }
        }
        Command::Phone(args) => runtime.block_on(phone(args)),
        Command::Bench(args) => runtime.block_on(capf::bench::main(*args)),
        Command::Op { api, command } => runtime.block_on(capf::cli::op(&api, command)),
        Command::Report { api, out } => runtime.block_on(capf::cli::report(&api, out)),
        Command::Unlock { api, device } => runtime.block_on(capf::cli::unlock(&api, device)),
        Command::Token { command } => runtime.block_on(capf::cli::token(command)),
    }
}

async fn phone(args: PhoneArgs) -> ExitCode {
    let mut opts = PhoneOptions::new(args.host, args.capf_cert, args.device.clone());
    opts.auth_string = args.auth_string;
    opts.lsc = args.lsc;
    opts.certificate_auth = args.cert_auth;
    opts.out = Some(
        args.out
            .unwrap_or_else(|| PathBuf::from(format!("{}.pem", args.device))),
    );
    opts.version = args.protocol_version;
    opts.request_in_progress = !args.no_request_in_progress;
    opts.keygen_delay = Duration::from_millis(args.keygen_delay_ms);
    opts.timeout = Duration::from_secs(args.timeout.max(1));
    opts.bind = args.bind;
    opts.sudi = args.sudi;
    opts.misbehave = if args.drop_after_certificate {
        Misbehave::DropAfterCertificate
    } else if args.fail_store {
        Misbehave::FailStore
    } else if args.stall_keygen {
        Misbehave::StallKeyGeneration
    } else {
        Misbehave::None
    };
    match capf::phone::run(&opts).await {
        Ok(report) => {
            println!("{}", report.summary());
            match report.end_reason {
                Some(Reason::NoAction | Reason::UpdateCertificate) => ExitCode::SUCCESS,
                Some(Reason::UnknownDevice) => ExitCode::from(3),
                Some(_) => ExitCode::from(2),
                None => ExitCode::from(4),
            }
        }
        Err(e) => {
            eprintln!("capf phone: {e}");
            ExitCode::FAILURE
        }
    }
}
