//! The administration commands of the `capf` binary: `op`, `report`, `unlock` (over the
//! admin API) and `token` (directly on the database, since a token is what the API needs).

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use chrono::Utc;
use clap::{Args, Subcommand};
use reqwest::Method;
use serde_json::{json, Value};

use crate::client::{ApiClient, ClientError};
use capf_model::operation::TokenScope;
use capf_server::config::{ServeArgs, Settings};
use capf_server::tokens;

/// Where the API is and how to authenticate to it.
#[derive(Debug, Clone, Args)]
pub struct ApiArgs {
    /// Base URL of the capf API.
    #[arg(
        long,
        env = "CAPF_API",
        default_value = "http://127.0.0.1:3805",
        global = true
    )]
    pub api: String,
    /// Bearer token [default: the first line of --token-file].
    #[arg(long, env = "CAPF_TOKEN", hide_env_values = true, global = true)]
    pub token: Option<String>,
    /// File holding the token.
    #[arg(long, default_value = "./data/admin.token", global = true)]
    pub token_file: PathBuf,
    /// Certificate to trust for an https API (PEM or DER) [default: ./certs/capf.pem].
    #[arg(long, global = true)]
    pub api_cert: Option<PathBuf>,
}

impl ApiArgs {
    pub fn client(&self) -> Result<ApiClient, ClientError> {
        let token = match &self.token {
            Some(t) => t.clone(),
            None => ApiClient::read_token(&self.token_file)?,
        };
        let pinned = if self.api.starts_with("https://") {
            let path = self
                .api_cert
                .clone()
                .unwrap_or_else(|| PathBuf::from("./certs/capf.pem"));
            Some(
                crate::phone::read_certificate(&path)
                    .map_err(|e| ClientError::Setup(e.to_string()))?,
            )
        } else {
            None
        };
        ApiClient::new(&self.api, &token, pinned)
    }
}

#[derive(Debug, Subcommand)]
pub enum OpCommand {
    /// Schedule (or replace) a device's certificate operation.
    Schedule(ScheduleArgs),
    /// Cancel a device's pending operation.
    Cancel { device: String },
    /// Show a device: status, operation, LSC, lock, last attempt.
    Show {
        device: String,
        /// Print the API's JSON.
        #[arg(long)]
        json: bool,
    },
    /// List devices (all pages), optionally filtered.
    List(ListArgs),
    /// The audit trail, oldest first (all pages): of one device, or of every device.
    Events(EventsArgs),
    /// Schedule operations from a CSV file (device, operation, auth_mode, auth_string, key,
    /// completes_by). Validates only, unless --apply.
    ///
    /// The whole file goes to the server in one request (at most 100,000 rows and 32 MiB):
    /// it is validated and scheduled all or nothing, and generated authentication strings
    /// are unique across the file. Separate imports draw their strings independently.
    Import(ImportArgs),
}

#[derive(Debug, Args)]
pub struct ScheduleArgs {
    pub device: String,
    /// install, delete or troubleshoot.
    #[arg(long, default_value = "install")]
    pub operation: String,
    /// string, null, lsc or mic.
    #[arg(long)]
    pub auth_mode: String,
    #[arg(long)]
    pub auth_string: Option<String>,
    #[arg(long)]
    pub generate_auth_string: bool,
    /// rsa-2048, ec-p256, ... [default: the server's].
    #[arg(long)]
    pub key: Option<String>,
    /// RFC 3339 [default: the server's window, 7 days].
    #[arg(long)]
    pub completes_by: Option<String>,
}

#[derive(Debug, Args)]
pub struct ListArgs {
    /// none, pending, success, failed, timed_out or cancelled.
    #[arg(long)]
    pub status: Option<String>,
    /// install, delete or troubleshoot.
    #[arg(long)]
    pub operation: Option<String>,
    /// present or absent.
    #[arg(long)]
    pub lsc: Option<String>,
    /// Date or RFC 3339.
    #[arg(long)]
    pub lsc_expires_before: Option<String>,
    /// Device name prefix.
    #[arg(long)]
    pub prefix: Option<String>,
    /// Print one JSON object per device.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct EventsArgs {
    /// Device name [default: every device, and events of no device such as token changes].
    pub device: Option<String>,
    /// Only events at or after this time: a date (2026-12-31) or RFC 3339.
    #[arg(long)]
    pub since: Option<String>,
    /// Print one JSON object per event.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct ImportArgs {
    pub file: PathBuf,
    /// Schedule for real (without it, only validate: a dry run).
    #[arg(long)]
    pub apply: bool,
    /// Generate an authentication string for every string-mode row without one, each
    /// different from every other of the import; they are printed as CSV
    /// (device,auth_string) on stdout.
    #[arg(long)]
    pub generate_auth_strings: bool,
}

#[derive(Debug, Subcommand)]
pub enum TokenCommand {
    /// Create a token and print it (the only time it is shown).
    Create {
        #[arg(long)]
        name: String,
        /// The token may read but not change anything.
        #[arg(long)]
        read_only: bool,
        #[command(flatten)]
        server: Box<ServeArgs>,
    },
    /// Revoke (delete) a token by name.
    Revoke {
        name: String,
        #[command(flatten)]
        server: Box<ServeArgs>,
    },
    /// List tokens (names and scopes, never secrets).
    List {
        #[command(flatten)]
        server: Box<ServeArgs>,
    },
}

fn fail(e: impl std::fmt::Display) -> ExitCode {
    eprintln!("capf: {e}");
    ExitCode::FAILURE
}

/// 2 for a request the API refused as invalid (with its field messages), 1 otherwise.
fn api_failure(e: ClientError) -> ExitCode {
    if let ClientError::Api { body, .. } = &e {
        if let Some(fields) = body.get("fields").and_then(Value::as_array) {
            eprintln!("capf: {e}");
            for f in fields {
                eprintln!(
                    "  {}: {}",
                    f.get("field").and_then(Value::as_str).unwrap_or("?"),
                    f.get("message").and_then(Value::as_str).unwrap_or("?")
                );
            }
            return ExitCode::from(2);
        }
    }
    fail(e)
}

fn print_json(v: &Value) {
    println!(
        "{}",
        serde_json::to_string_pretty(v).unwrap_or_else(|_| v.to_string())
    );
}

pub async fn op(api: &ApiArgs, command: OpCommand) -> ExitCode {
    let client = match api.client() {
        Ok(c) => c,
        Err(e) => return fail(e),
    };
    match command {
        OpCommand::Schedule(args) => {
            let mut body = json!({"operation": args.operation, "auth_mode": args.auth_mode});
            let map = body.as_object_mut().expect("object");
            if let Some(s) = args.auth_string {
                map.insert("auth_string".into(), json!(s));
            }
            if args.generate_auth_string {
                map.insert("generate_auth_string".into(), json!(true));
            }
            if let Some(k) = args.key {
                map.insert("key".into(), json!(k));
            }
            if let Some(c) = args.completes_by {
                map.insert("completes_by".into(), json!(c));
            }
            match client.schedule(&args.device, &body).await {
                Ok(v) => {
                    print_json(&v);
                    ExitCode::SUCCESS
                }
                Err(e) => api_failure(e),
            }
        }
        OpCommand::Cancel { device } => {
            let path = format!("/api/v1/devices/{device}/operation");
            match client.json(Method::DELETE, &path, &[], None).await {
                Ok(v) => {
                    print_json(&v);
                    ExitCode::SUCCESS
                }
                Err(e) => api_failure(e),
            }
        }
        OpCommand::Show { device, json } => {
            let path = format!("/api/v1/devices/{device}");
            match client.json(Method::GET, &path, &[], None).await {
                Ok(v) if json => {
                    print_json(&v);
                    ExitCode::SUCCESS
                }
                Ok(v) => {
                    print!("{}", describe_device(&v));
                    ExitCode::SUCCESS
                }
                Err(e) => api_failure(e),
            }
        }
        OpCommand::List(args) => list(&client, args).await,
        OpCommand::Events(args) => events(&client, args).await,
        OpCommand::Import(args) => import(&client, args).await,
    }
}

/// A device as a few lines for people.
pub fn describe_device(v: &Value) -> String {
    let s = |v: &Value, k: &str| v.get(k).and_then(Value::as_str).unwrap_or("").to_string();
    let mut out = format!("{}\n", s(v, "name"));
    let status = v.get("status").cloned().unwrap_or(Value::Null);
    out.push_str(&format!(
        "  Certificate Operation Status: {}\n",
        s(&status, "text")
    ));
    if let Some(op) = v.get("operation").filter(|o| !o.is_null()) {
        out.push_str(&format!(
            "  Operation: {} ({}), auth mode {}, key {}, completes by {}{}\n",
            s(op, "operation"),
            s(op, "status"),
            s(op, "auth_mode"),
            s(op, "key"),
            s(op, "completes_by"),
            op.get("auth_string")
                .and_then(Value::as_str)
                .map(|a| format!(", authentication string {a}"))
                .unwrap_or_default()
        ));
    }
    match v.get("lsc").filter(|l| !l.is_null()) {
        Some(lsc) => out.push_str(&format!(
            "  LSC: serial {}, valid {} to {}\n",
            s(lsc, "serial"),
            s(lsc, "not_before"),
            s(lsc, "not_after")
        )),
        None => out.push_str("  LSC: none\n"),
    }
    if let Some(lock) = v.get("lock") {
        let locked = lock.get("locked").and_then(Value::as_bool).unwrap_or(false);
        let count = lock
            .get("failed_auth_count")
            .and_then(Value::as_u64)
            .unwrap_or(0);
        out.push_str(&format!(
            "  Locked: {}, failed authentications: {count}\n",
            if locked {
                format!("until {}", s(lock, "locked_until"))
            } else {
                "no".into()
            }
        ));
    }
    if let Some(a) = v.get("last_attempt").filter(|a| !a.is_null()) {
        out.push_str(&format!(
            "  Last attempt: {} from {}: {}\n",
            s(a, "at"),
            s(a, "source_addr"),
            s(a, "outcome")
        ));
    }
    out
}

async fn list(client: &ApiClient, args: ListArgs) -> ExitCode {
    let mut query: Vec<(String, String)> = Vec::new();
    for (name, value) in [
        ("status", args.status),
        ("operation", args.operation),
        ("lsc", args.lsc),
        ("lsc_expires_before", args.lsc_expires_before),
        ("prefix", args.prefix),
    ] {
        if let Some(v) = value {
            query.push((name.into(), v));
        }
    }
    query.push(("limit".into(), "1000".into()));
    let mut stdout = std::io::stdout().lock();
    loop {
        let page = match client
            .json(Method::GET, "/api/v1/devices", &query, None)
            .await
        {
            Ok(p) => p,
            Err(e) => return api_failure(e),
        };
        for d in page
            .get("devices")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            let line = if args.json {
                d.to_string()
            } else {
                let text = |v: Option<&Value>| v.and_then(Value::as_str).unwrap_or("-").to_string();
                format!(
                    "{:<15}  {:<48}  LSC {}",
                    text(d.get("name")),
                    text(d.get("status").and_then(|s| s.get("text"))),
                    d.get("lsc")
                        .and_then(|l| l.get("not_after"))
                        .and_then(Value::as_str)
                        .map(|t| format!("until {t}"))
                        .unwrap_or_else(|| "none".into())
                )
            };
            if writeln!(stdout, "{line}").is_err() {
                return ExitCode::SUCCESS; // stdout closed (e.g. piped into head)
            }
        }
        match page.get("next_cursor").and_then(Value::as_str) {
            Some(cursor) => {
                query.retain(|(k, _)| k != "cursor");
                query.push(("cursor".into(), cursor.to_string()));
            }
            None => return ExitCode::SUCCESS,
        }
    }
}

async fn events(client: &ApiClient, args: EventsArgs) -> ExitCode {
    let mut query: Vec<(String, String)> = Vec::new();
    if let Some(d) = args.device {
        query.push(("device".into(), d));
    }
    if let Some(t) = args.since {
        query.push(("since".into(), t));
    }
    query.push(("limit".into(), "1000".into()));
    let mut stdout = std::io::stdout().lock();
    loop {
        let page = match client
            .json(Method::GET, "/api/v1/events", &query, None)
            .await
        {
            Ok(p) => p,
            Err(e) => return api_failure(e),
        };
        for e in page
            .get("events")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            let line = if args.json {
                e.to_string()
            } else {
                let text = |k: &str| e.get(k).and_then(Value::as_str).unwrap_or("-");
                format!(
                    "{}  {:<15}  {:<24}  {:<15}  {}",
                    text("at"),
                    text("device"),
                    text("kind"),
                    text("source_addr"),
                    e.get("detail").and_then(Value::as_str).unwrap_or("")
                )
            };
            if writeln!(stdout, "{line}").is_err() {
                return ExitCode::SUCCESS; // stdout closed (e.g. piped into head)
            }
        }
        match page.get("next_after").and_then(Value::as_i64) {
            Some(after) => {
                query.retain(|(k, _)| k != "after");
                query.push(("after".into(), after.to_string()));
            }
            None => return ExitCode::SUCCESS,
        }
    }
}

/// Data rows of a CSV file (the header excluded), counted the way the server reads them.
fn count_rows(csv: &[u8]) -> usize {
    csv::ReaderBuilder::new()
        .has_headers(true)
        .flexible(true)
        .from_reader(csv)
        .byte_records()
        .count()
}

/// Sends the whole file in one request. One request is what makes the import all or
/// nothing and every generated authentication string unique across the file: the server
/// draws them from one generator per request, and it keeps them only in the operations
/// (never handed back to a client to avoid), so separate requests could repeat a string.
async fn import(client: &ApiClient, args: ImportArgs) -> ExitCode {
    use capf_server::api::bulk::{MAX_BODY, MAX_ROWS};
    let file = args.file.display();
    let body = match std::fs::read(&args.file) {
        Ok(b) => b,
        Err(e) => return fail(format!("cannot read {file}: {e}")),
    };
    let rows = count_rows(&body);
    if body.len() > MAX_BODY || rows > MAX_ROWS {
        eprintln!(
            "capf: {file}: {rows} rows, {} bytes; one import takes at most {MAX_ROWS} rows \
             and {} MiB. Split the file (generated authentication strings are unique within \
             one import only); nothing was scheduled",
            body.len(),
            MAX_BODY / (1024 * 1024)
        );
        return ExitCode::from(2);
    }
    // One request has no row-by-row progress to show: a spinner with the time spent says
    // what is known, that the server is still at it.
    let progress = indicatif::ProgressBar::new_spinner();
    progress.set_style(
        indicatif::ProgressStyle::with_template("{spinner} {msg} ({elapsed})")
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_spinner()),
    );
    let verb = if args.apply {
        "scheduling"
    } else {
        "validating"
    };
    progress.set_message(format!("{verb} {rows} rows of {file}"));
    progress.enable_steady_tick(std::time::Duration::from_millis(120));
    let sent = client
        .bulk_csv(body, !args.apply, args.generate_auth_strings)
        .await;
    progress.finish_and_clear();
    let result = match sent {
        Ok(r) => r,
        // The server refused the request: it applied nothing.
        Err(e @ ClientError::Api { .. }) => return fail(format!("{e}; nothing was scheduled")),
        // The answer may have been lost after the server committed the import.
        Err(e) if args.apply => {
            return fail(format!(
                "{e}; whether the import was applied is unknown (see capf op list)"
            ))
        }
        Err(e) => return fail(e),
    };
    let mut errors: Vec<(u64, String)> = result
        .get("errors")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .map(|e| {
            // The server read the file as sent, so its line numbers are the file's.
            let line = e.get("line").and_then(Value::as_u64).unwrap_or(0);
            let place = match line {
                0 => "file".to_string(),
                1 => "line 1 (header)".to_string(),
                n => format!("line {n}"),
            };
            let text = format!(
                "{place}: {}: {}",
                e.get("field").and_then(Value::as_str).unwrap_or("?"),
                e.get("message").and_then(Value::as_str).unwrap_or("?")
            );
            (line, text)
        })
        .collect();
    if !errors.is_empty() {
        errors.sort_by_key(|(line, _)| *line);
        for (_, e) in &errors {
            eprintln!("{e}");
        }
        eprintln!(
            "capf: {} error(s) in {file}; nothing was scheduled",
            errors.len()
        );
        return ExitCode::from(2);
    }
    if !args.apply {
        eprintln!(
            "{rows} rows are valid (dry run: nothing scheduled; add --apply to schedule them)"
        );
        return ExitCode::SUCCESS;
    }
    let mut out = std::io::stdout().lock();
    if args.generate_auth_strings {
        let _ = writeln!(out, "device,auth_string");
        for g in result
            .get("auth_strings")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            let _ = writeln!(
                out,
                "{},{}",
                g.get("device").and_then(Value::as_str).unwrap_or(""),
                g.get("auth_string").and_then(Value::as_str).unwrap_or("")
            );
        }
    }
    let scheduled = result.get("scheduled").and_then(Value::as_u64).unwrap_or(0);
    eprintln!("{scheduled} operations scheduled");
    ExitCode::SUCCESS
}

pub async fn report(api: &ApiArgs, out: Option<PathBuf>) -> ExitCode {
    let client = match api.client() {
        Ok(c) => c,
        Err(e) => return fail(e),
    };
    let body = match client.send(Method::GET, "/api/v1/report", &[], None).await {
        Ok(b) => b,
        Err(e) => return api_failure(e),
    };
    let written = match out {
        Some(path) => std::fs::write(&path, &body),
        None => std::io::stdout().lock().write_all(&body),
    };
    match written {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => fail(e),
    }
}

pub async fn unlock(api: &ApiArgs, device: String) -> ExitCode {
    let client = match api.client() {
        Ok(c) => c,
        Err(e) => return fail(e),
    };
    let path = format!("/api/v1/devices/{device}/unlock");
    match client.json(Method::POST, &path, &[], None).await {
        Ok(v) => {
            print_json(&v);
            ExitCode::SUCCESS
        }
        Err(e) => api_failure(e),
    }
}

pub async fn token(command: TokenCommand) -> ExitCode {
    let server = match &command {
        TokenCommand::Create { server, .. }
        | TokenCommand::Revoke { server, .. }
        | TokenCommand::List { server } => server,
    };
    let settings = match Settings::resolve(server) {
        Ok(s) => s,
        Err(e) => return fail(e),
    };
    let store = match capf_store::open(&settings.database_url).await {
        Ok(s) => s,
        Err(e) => return fail(format!("database {}: {e}", settings.database_url)),
    };
    match command {
        TokenCommand::Create {
            name, read_only, ..
        } => {
            let scope = if read_only {
                TokenScope::ReadOnly
            } else {
                TokenScope::Admin
            };
            let new = match tokens::generate(&name, scope, Utc::now()) {
                Ok(t) => t,
                Err(e) => return fail(e),
            };
            match store.create_token(&new.record, Utc::now()).await {
                Ok(()) => {
                    println!("{}", new.secret);
                    eprintln!("token {name:?} ({scope}) created; it is shown only this once");
                    ExitCode::SUCCESS
                }
                Err(e) => fail(e),
            }
        }
        TokenCommand::Revoke { name, .. } => match store.revoke_token(&name, Utc::now()).await {
            Ok(true) => {
                eprintln!("token {name:?} revoked");
                ExitCode::SUCCESS
            }
            Ok(false) => fail(format!("no token named {name:?}")),
            Err(e) => fail(e),
        },
        TokenCommand::List { .. } => match store.tokens().await {
            Ok(list) => {
                for t in list {
                    println!(
                        "{}\t{}\t{}",
                        t.name,
                        t.scope,
                        t.created_at
                            .to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
                    );
                }
                ExitCode::SUCCESS
            }
            Err(e) => fail(e),
        },
    }
}
