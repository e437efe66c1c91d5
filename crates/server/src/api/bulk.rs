//! Bulk scheduling (the Bulk Administration Tool of capf) and the CAPF report.
//!
//! `POST /api/v1/operations/bulk` takes CSV (`Content-Type: text/csv`, one row per device:
//! device, operation, auth_mode, auth_string, key, completes_by) or JSON (`{"rows": [...]}`,
//! or `{"query": {filters}, "operation": ..., ...}` to schedule every device a listing
//! filter selects). Every row is validated; any error means nothing is scheduled and every
//! error is reported with its line (CSV) or row number. `dry_run` validates only.

use std::collections::HashMap;

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::State;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use chrono::Utc;
use serde::Serialize;
use serde_json::Value;

use super::access::{AdminAccess, ReadAccess};
use super::devices::{json_object, listing_filter};
use super::filters;
use super::problem::Problem;
use super::unique::UniqueQuery;
use super::validate::{self, AuthStringGenerator, Defaults, FieldError, OperationFields};
use super::ApiState;
use capf_model::device::DeviceName;
use capf_model::operation::AuthMode;
use capf_store::{DeviceFilter, NewOperation};

/// Most rows one bulk request may carry.
pub const MAX_ROWS: usize = 100_000;
/// Largest bulk body: 100,000 rows of generous width.
pub const MAX_BODY: usize = 32 * 1024 * 1024;

/// One input row before validation.
#[derive(Debug, Clone, PartialEq)]
pub struct BulkRow {
    /// CSV line number (the header is line 1), or the 1-based index of a JSON row.
    pub line: usize,
    pub device: String,
    pub fields: OperationFields,
}

/// A problem with one row.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct RowError {
    /// CSV line number, or JSON row number (1-based).
    pub line: usize,
    pub device: Option<String>,
    pub field: String,
    pub message: String,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct GeneratedString {
    pub device: String,
    pub auth_string: String,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct BulkResult {
    pub dry_run: bool,
    /// Rows received.
    pub rows: usize,
    /// Rows that passed validation.
    pub valid: usize,
    /// Operations scheduled (0 on a dry run or when any row is wrong).
    pub scheduled: usize,
    pub errors: Vec<RowError>,
    /// Authentication strings generated for the scheduled operations.
    pub auth_strings: Vec<GeneratedString>,
}

/// A bulk request, parsed.
#[derive(Debug, Default)]
pub struct BulkRequest {
    pub rows: Vec<BulkRow>,
    pub dry_run: bool,
    pub generate_auth_strings: bool,
    /// Schedule every device this filter selects (with `template`), instead of `rows`.
    pub query: Option<DeviceFilter>,
    pub template: OperationFields,
}

fn request_error(field: &str, message: impl Into<String>) -> RowError {
    RowError {
        line: 0,
        device: None,
        field: field.to_string(),
        message: message.into(),
    }
}

/// Reads CSV rows. The header names the columns (any order, case-insensitive); `device`
/// is required, the others may be missing or empty.
pub fn parse_csv(body: &[u8]) -> Result<Vec<BulkRow>, Vec<RowError>> {
    let mut reader = csv::ReaderBuilder::new()
        .has_headers(true)
        .flexible(true)
        .trim(csv::Trim::All)
        .from_reader(body);
    let headers = match reader.headers() {
        Ok(h) => h.clone(),
        Err(e) => {
            return Err(vec![request_error(
                "header",
                format!("unreadable CSV: {e}"),
            )])
        }
    };
    let mut columns: HashMap<&'static str, usize> = HashMap::new();
    let mut errors = Vec::new();
    for (i, name) in headers.iter().enumerate() {
        let key = match name.to_ascii_lowercase().as_str() {
            "device" | "device_name" | "name" => "device",
            "operation" => "operation",
            "auth_mode" => "auth_mode",
            "auth_string" => "auth_string",
            "key" => "key",
            "completes_by" => "completes_by",
            other => {
                errors.push(RowError {
                    line: 1,
                    device: None,
                    field: other.to_string(),
                    message: "Unknown column. Columns are device, operation, auth_mode, \
                              auth_string, key, completes_by."
                        .into(),
                });
                continue;
            }
        };
        if let Some(first) = columns.insert(key, i) {
            // `device,...,name`: two columns for one field. The last would silently win.
            errors.push(RowError {
                line: 1,
                device: None,
                field: name.to_string(),
                message: format!(
                    "Column {key} given twice (as {:?} and {name:?}): keep one.",
                    &headers[first]
                ),
            });
        }
    }
    if !columns.contains_key("device") {
        errors.push(RowError {
            line: 1,
            device: None,
            field: "device".into(),
            message: "The header must name a device column.".into(),
        });
    }
    if !errors.is_empty() {
        return Err(errors);
    }
    let mut rows = Vec::new();
    for record in reader.records() {
        let record = match record {
            Ok(r) => r,
            Err(e) => {
                let line = e.position().map(|p| p.line() as usize).unwrap_or(0);
                errors.push(RowError {
                    line,
                    device: None,
                    field: "row".into(),
                    message: format!("unreadable CSV row: {e}"),
                });
                continue;
            }
        };
        let line = record.position().map(|p| p.line() as usize).unwrap_or(0);
        if rows.len() >= MAX_ROWS {
            return Err(vec![request_error(
                "rows",
                format!("at most {MAX_ROWS} rows per request"),
            )]);
        }
        let cell = |key: &str| -> Option<String> {
            columns
                .get(key)
                .and_then(|i| record.get(*i))
                .filter(|v| !v.is_empty())
                .map(str::to_string)
        };
        rows.push(BulkRow {
            line,
            device: cell("device").unwrap_or_default(),
            fields: OperationFields {
                operation: cell("operation"),
                auth_mode: cell("auth_mode"),
                auth_string: cell("auth_string"),
                generate_auth_string: false,
                key: cell("key"),
                completes_by: cell("completes_by"),
            },
        });
    }
    if errors.is_empty() {
        Ok(rows)
    } else {
        Err(errors)
    }
}

const REQUEST_FIELDS: &[&str] = &["rows", "query", "dry_run", "generate_auth_strings"];

/// Reads a JSON bulk request: `{"rows": [...]}` or `{"query": {...}, <operation fields>}`.
pub fn parse_json(body: &[u8]) -> Result<BulkRequest, Vec<RowError>> {
    let object = json_object(body).map_err(|_| {
        vec![request_error(
            "body",
            "must be a JSON object with rows (or query)",
        )]
    })?;
    let mut request = BulkRequest::default();
    let mut errors = Vec::new();
    let flag = |name: &str, errors: &mut Vec<RowError>| match object.get(name) {
        None | Some(Value::Null) => false,
        Some(Value::Bool(b)) => *b,
        Some(_) => {
            errors.push(request_error(name, "must be true or false"));
            false
        }
    };
    request.dry_run = flag("dry_run", &mut errors);
    request.generate_auth_strings = flag("generate_auth_strings", &mut errors);
    match (object.get("rows"), object.get("query")) {
        (Some(Value::Array(rows)), None) => {
            if rows.len() > MAX_ROWS {
                return Err(vec![request_error(
                    "rows",
                    format!("at most {MAX_ROWS} rows per request"),
                )]);
            }
            for (i, row) in rows.iter().enumerate() {
                let line = i + 1;
                let Value::Object(row) = row else {
                    errors.push(RowError {
                        line,
                        device: None,
                        field: "row".into(),
                        message: "must be a JSON object".into(),
                    });
                    continue;
                };
                let device = match row.get("device") {
                    Some(Value::String(s)) => s.clone(),
                    _ => String::new(),
                };
                let (fields, field_errors) = validate::fields_from_json(row, &["device"]);
                errors.extend(field_errors.into_iter().map(|e| RowError {
                    line,
                    device: Some(device.clone()),
                    field: e.field,
                    message: e.message,
                }));
                request.rows.push(BulkRow {
                    line,
                    device,
                    fields,
                });
            }
            for name in object.keys() {
                if !REQUEST_FIELDS.contains(&name.as_str()) {
                    errors.push(request_error(name, "Unknown field."));
                }
            }
        }
        (None, Some(Value::Object(query))) => {
            let mut filter = DeviceFilter::default();
            for (name, value) in query {
                let text = match value {
                    Value::String(s) => s.clone(),
                    _ => {
                        errors.push(request_error(name, "must be text"));
                        continue;
                    }
                };
                match filters::apply(&mut filter, name, &text) {
                    Ok(true) => {}
                    Ok(false) => errors.push(request_error(name, "Unknown filter.")),
                    Err(e) => errors.push(request_error(&e.field, e.message)),
                }
            }
            request.query = Some(filter);
            let (template, field_errors) = validate::fields_from_json(&object, REQUEST_FIELDS);
            errors.extend(
                field_errors
                    .into_iter()
                    .map(|e| request_error(&e.field, e.message)),
            );
            request.template = template;
        }
        _ => errors.push(request_error(
            "rows",
            "give either rows (an array) or query (an object)",
        )),
    }
    if errors.is_empty() {
        Ok(request)
    } else {
        Err(errors)
    }
}

/// Validates every row: device names (and duplicates), then the operation fields. Returns
/// the operations with generated strings filled in, or every error.
pub fn validate_rows(
    rows: &[BulkRow],
    generate_auth_strings: bool,
    defaults: &Defaults,
) -> (Vec<NewOperation>, Vec<GeneratedString>, Vec<RowError>) {
    let mut seen: HashMap<DeviceName, usize> = HashMap::with_capacity(rows.len());
    let mut ops = Vec::with_capacity(rows.len());
    let mut generated = Vec::new();
    let mut errors = Vec::new();
    let mut generator = AuthStringGenerator::default();
    for row in rows {
        let error = |field: &str, message: String| RowError {
            line: row.line,
            device: Some(row.device.clone()).filter(|d| !d.is_empty()),
            field: field.to_string(),
            message,
        };
        let device = match DeviceName::from_admin(&row.device) {
            Ok(d) => d,
            Err(e) => {
                errors.push(error("device", e.to_string()));
                continue;
            }
        };
        if let Some(first) = seen.insert(device.clone(), row.line) {
            errors.push(error(
                "device",
                format!("Device Name appears more than once (first at line {first})."),
            ));
            continue;
        }
        let mut fields = row.fields.clone();
        if generate_auth_strings
            && fields.auth_string.is_none()
            && fields.auth_mode.as_deref() == Some("string")
        {
            fields.generate_auth_string = true;
        }
        match validate::validate(&device, &fields, defaults) {
            Ok(mut valid) => {
                if valid.generate_auth_string && valid.op.auth_mode == AuthMode::String {
                    let s = generator.generate();
                    generated.push(GeneratedString {
                        device: device.as_str().to_string(),
                        auth_string: s.0.clone(),
                    });
                    valid.op.auth_string = Some(s);
                }
                ops.push(valid.op);
            }
            Err(field_errors) => errors.extend(
                field_errors
                    .into_iter()
                    .map(|FieldError { field, message }| error(&field, message)),
            ),
        }
    }
    (ops, generated, errors)
}

fn is_csv(headers: &HeaderMap) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.trim_start().to_ascii_lowercase().starts_with("text/csv"))
}

/// Schedules many operations at once (CSV or JSON), all or nothing.
#[utoipa::path(post, path = "/api/v1/operations/bulk", tag = "operations",
    params(
        ("dry_run" = Option<bool>, Query, description = "validate only (CSV; JSON has a field)"),
        ("generate_auth_strings" = Option<bool>, Query,
         description = "generate a unique string for every string-mode row without one")),
    request_body(content = String, description = "CSV with a header row, or JSON {rows|query, ...}",
                 content_type = "text/csv"),
    responses((status = 200, body = BulkResult), (status = 422, body = BulkResult),
              (status = 413)),
    security(("bearer" = [])))]
pub async fn bulk(
    _access: AdminAccess,
    State(state): State<ApiState>,
    UniqueQuery(params): UniqueQuery,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, Problem> {
    // axum's own answer to an oversized body is plain text without the limit: say it in
    // the API's JSON instead.
    let body = body.map_err(|e| {
        if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
            Problem::TooLarge(format!(
                "the body is larger than {} MiB, the most one bulk request takes \
                 (at most {MAX_ROWS} rows)",
                MAX_BODY / (1024 * 1024)
            ))
        } else {
            Problem::field("body", e.body_text())
        }
    })?;
    let mut param_errors = Vec::new();
    let mut param = |name: &str| match params.get(name).map(String::as_str) {
        None => None,
        Some("true") | Some("1") => Some(true),
        Some("false") | Some("0") => Some(false),
        Some(_) => {
            param_errors.push(request_error(name, "must be true or false"));
            None
        }
    };
    let dry_run_param = param("dry_run");
    let generate_param = param("generate_auth_strings");
    for name in params.keys() {
        if name != "dry_run" && name != "generate_auth_strings" {
            param_errors.push(request_error(name, "Unknown parameter."));
        }
    }
    let csv = is_csv(&headers);
    let defaults = state.defaults();
    // Parsing and checking 100,000 rows is a fraction of a second of CPU: off the workers.
    let parsed = tokio::task::spawn_blocking(move || -> Result<BulkRequest, Vec<RowError>> {
        if csv {
            Ok(BulkRequest {
                rows: parse_csv(&body)?,
                ..Default::default()
            })
        } else {
            parse_json(&body)
        }
    })
    .await
    .map_err(|_| Problem::Internal)?;
    let mut request = match parsed {
        Ok(r) => r,
        Err(errors) => {
            param_errors.extend(errors);
            return Ok(answer(
                dry_run_param.unwrap_or(false),
                0,
                0,
                0,
                param_errors,
                Vec::new(),
            ));
        }
    };
    request.dry_run = dry_run_param.unwrap_or(request.dry_run);
    request.generate_auth_strings = generate_param.unwrap_or(request.generate_auth_strings);
    if let Some(filter) = request.query.take() {
        let selected = state
            .store
            .list_devices(&DeviceFilter {
                limit: (MAX_ROWS + 1) as u32,
                ..filter
            })
            .await?;
        if selected.len() > MAX_ROWS {
            return Err(Problem::TooLarge(format!(
                "the query selects more than {MAX_ROWS} devices; narrow it"
            )));
        }
        request.rows = selected
            .into_iter()
            .enumerate()
            .map(|(i, s)| BulkRow {
                line: i + 1,
                device: s.device.name.as_str().to_string(),
                fields: request.template.clone(),
            })
            .collect();
    }
    let rows = std::mem::take(&mut request.rows);
    let count = rows.len();
    let generate = request.generate_auth_strings;
    let (ops, generated, mut errors) =
        tokio::task::spawn_blocking(move || validate_rows(&rows, generate, &defaults))
            .await
            .map_err(|_| Problem::Internal)?;
    let valid = ops.len();
    errors.splice(0..0, param_errors);
    if !errors.is_empty() || request.dry_run {
        return Ok(answer(request.dry_run, count, valid, 0, errors, Vec::new()));
    }
    let ids = state.store.schedule_many(&ops, state.clock.now()).await?;
    tracing::info!(count = ids.len(), "bulk: operations scheduled");
    Ok(answer(false, count, valid, ids.len(), errors, generated))
}

fn answer(
    dry_run: bool,
    rows: usize,
    valid: usize,
    scheduled: usize,
    errors: Vec<RowError>,
    auth_strings: Vec<GeneratedString>,
) -> Response {
    let status = if errors.is_empty() {
        StatusCode::OK
    } else {
        StatusCode::UNPROCESSABLE_ENTITY
    };
    (
        status,
        Json(BulkResult {
            dry_run,
            rows,
            valid,
            scheduled,
            errors,
            auth_strings,
        }),
    )
        .into_response()
}

/// Rows read from the store per round trip while writing the report.
const REPORT_PAGE: u32 = 5000;

/// A report cell as spreadsheets will read it as text: one that begins with `=`, `+`, `-`,
/// `@`, a tab or a carriage return (a device named `-2-3`, say) would be taken for a
/// formula, so it gets a leading `'`, as OWASP's guidance on CSV injection says.
fn spreadsheet_safe(cell: &str) -> std::borrow::Cow<'_, str> {
    match cell.as_bytes().first() {
        Some(b'=' | b'+' | b'-' | b'@' | b'\t' | b'\r') => format!("'{cell}").into(),
        _ => cell.into(),
    }
}

/// The CAPF report: one CSV row per device (the listing's filters apply).
#[utoipa::path(get, path = "/api/v1/report", tag = "devices",
    responses((status = 200, content_type = "text/csv", body = String)),
    security(("bearer" = [])))]
pub async fn report(
    _access: ReadAccess,
    State(state): State<ApiState>,
    UniqueQuery(mut params): UniqueQuery,
) -> Result<Response, Problem> {
    params.remove("limit");
    params.remove("cursor");
    let mut filter = listing_filter(&params)?;
    filter.limit = REPORT_PAGE;
    let now = state.clock.now();
    let mut out = csv::Writer::from_writer(Vec::new());
    let header = [
        "device",
        "lsc_status",
        "lsc_serial",
        "lsc_not_after",
        "operation",
        "status",
        "status_code",
        "cause",
        "completes_by",
        "last_attempt_at",
        "last_attempt_source",
        "last_attempt_outcome",
    ];
    let write_err = |_| Problem::Internal;
    out.write_record(header).map_err(write_err)?;
    loop {
        let page = state.store.list_devices(&filter).await?;
        for s in &page {
            let status = capf_model::status::describe(
                s.operation.as_ref().map(capf_store::Operation::status_of),
            );
            let lsc_status = match &s.lsc {
                None => "none",
                Some(c) if c.not_after <= now => "expired",
                Some(_) => "valid",
            };
            let time =
                |t: chrono::DateTime<Utc>| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
            let last = s.device.last_attempt.as_ref();
            let cells = [
                s.device.name.as_str(),
                lsc_status,
                s.lsc.as_ref().map(|c| c.serial_hex.as_str()).unwrap_or(""),
                &s.lsc
                    .as_ref()
                    .map(|c| time(c.not_after))
                    .unwrap_or_default(),
                s.operation.as_ref().map(|o| o.kind.as_str()).unwrap_or(""),
                &status.text,
                status.code,
                status.cause.unwrap_or(""),
                &s.operation
                    .as_ref()
                    .map(|o| time(o.completes_by))
                    .unwrap_or_default(),
                &last.map(|a| time(a.at)).unwrap_or_default(),
                last.map(|a| a.source_addr.as_str()).unwrap_or(""),
                last.map(|a| a.outcome.as_str()).unwrap_or(""),
            ];
            out.write_record(cells.iter().map(|c| spreadsheet_safe(c).into_owned()))
                .map_err(write_err)?;
        }
        match page.last() {
            Some(last) if page.len() as u32 == REPORT_PAGE => {
                filter.after_name = Some(last.device.name.as_str().to_string());
            }
            _ => break,
        }
    }
    let body = out.into_inner().map_err(|_| Problem::Internal)?;
    Ok((
        [
            (header::CONTENT_TYPE, "text/csv; charset=utf-8"),
            (
                header::CONTENT_DISPOSITION,
                "attachment; filename=\"capf-report.csv\"",
            ),
        ],
        body,
    )
        .into_response())
}

#[cfg(test)]
mod tests {
    use super::*;
    use capf_model::keyspec::KeySpec;

    fn defaults() -> Defaults {
        Defaults {
            key: KeySpec::Rsa(2048),
            window: chrono::Duration::days(7),
            now: Utc::now(),
        }
    }

    #[test]
    fn csv_rows_with_errors_report_their_lines() {
        let csv = "device,operation,auth_mode,auth_string\n\
                   SEP001122334455,install,string,1234\n\
                   SEP00112233445X,install,null,\n\
                   SEP001122334456,install,string,12ab\n\
                   sep001122334455,delete,null,\n";
        let rows = parse_csv(csv.as_bytes()).unwrap();
        assert_eq!(rows.len(), 4);
        assert_eq!(rows[0].line, 2);
        let (ops, _, errors) = validate_rows(&rows, false, &defaults());
        assert_eq!(ops.len(), 1);
        let lines: Vec<(usize, &str)> = errors.iter().map(|e| (e.line, e.field.as_str())).collect();
        assert_eq!(lines, [(3, "device"), (4, "auth_string"), (5, "device")]);
        assert!(errors[2].message.contains("line 2"));
    }

    #[test]
    fn csv_header_is_checked() {
        // Finding 2 of the hardening: two columns for the device (aliases included) are
        // refused, not resolved in favour of the last.
        let errors =
            parse_csv(b"device,operation,auth_mode,name\nSEP0000000000D1,install,null,jsmith\n")
                .unwrap_err();
        assert_eq!(errors.len(), 1, "{errors:?}");
        assert_eq!(errors[0].field, "name");
        assert!(errors[0].message.contains("given twice"), "{errors:?}");
        assert!(parse_csv(b"key,operation,key\nx,install,rsa-2048\n").is_err());
        assert!(parse_csv(b"name,colour\nSEP001122334455,red\n").is_err());
        assert!(parse_csv(b"operation\ninstall\n").is_err());
    }

    #[test]
    fn generated_strings_fill_string_rows_only() {
        let csv = "device,operation,auth_mode\n\
                   SEP001122334455,install,string\n\
                   SEP001122334456,install,null\n";
        let rows = parse_csv(csv.as_bytes()).unwrap();
        let (ops, generated, errors) = validate_rows(&rows, true, &defaults());
        assert!(errors.is_empty(), "{errors:?}");
        assert_eq!(ops.len(), 2);
        assert_eq!(generated.len(), 1);
        assert_eq!(generated[0].device, "SEP001122334455");
        assert_eq!(
            ops[0].auth_string.as_ref().unwrap().0,
            generated[0].auth_string
        );
    }

    #[test]
    fn json_requests() {
        let body = br#"{"rows": [{"device": "SEP001122334455", "operation": "install",
                         "auth_mode": "null"}], "dry_run": true}"#;
        let r = parse_json(body).unwrap();
        assert!(r.dry_run);
        assert_eq!(r.rows.len(), 1);
        let body = br#"{"query": {"lsc": "absent"}, "operation": "install", "auth_mode": "null"}"#;
        let r = parse_json(body).unwrap();
        assert_eq!(r.query.unwrap().has_lsc, Some(false));
        assert_eq!(r.template.operation.as_deref(), Some("install"));
        assert!(parse_json(br#"{"rows": 3}"#).is_err());
        assert!(parse_json(br#"{"rows": [], "colour": 1}"#).is_err());
        assert!(parse_json(b"not json").is_err());
    }
}
