//! `/api/v1/devices/...`: schedule, cancel and inspect one device's certificate operation;
//! list devices; certificates; unlock; and the audit trail.

use std::collections::HashMap;

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::header;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::{Map, Value};

use super::access::{AdminAccess, ReadAccess};
use super::filters;
use super::problem::Problem;
use super::unique::UniqueQuery;
use super::validate::{self, AuthStringGenerator, Defaults, FieldError};
use super::views::*;
use super::ApiState;
use capf_model::device::DeviceName;
use capf_store::{DeviceFilter, EventFilter};

/// Most devices one listing page returns.
pub const MAX_PAGE: u32 = 1000;
const DEFAULT_PAGE: u32 = 100;

/// A device name from the URL, or a 422 naming the field.
pub fn device_from_path(name: &str) -> Result<DeviceName, Problem> {
    DeviceName::from_admin(name).map_err(|e| Problem::field("device", e.to_string()))
}

/// A JSON object body, or a 422 saying what is wrong with it.
pub fn json_object(body: &[u8]) -> Result<Map<String, Value>, Problem> {
    match super::unique::json_value(body) {
        Ok(Value::Object(map)) => Ok(map),
        Ok(_) => Err(Problem::field("body", "must be a JSON object")),
        Err(e) => Err(Problem::field("body", format!("is not valid JSON: {e}"))),
    }
}

impl ApiState {
    pub fn defaults(&self) -> Defaults {
        let live = self.live.current();
        Defaults {
            key: live.default_key,
            window: live.operation_window(),
            now: self.clock.now(),
        }
    }
}

/// Schedules (or replaces) the device's operation.
#[utoipa::path(put, path = "/api/v1/devices/{name}/operation", tag = "operations",
    params(("name" = String, Path, description = "SEP + 12 hex digits, or a softphone name")),
    request_body(content = ScheduleRequestDoc, content_type = "application/json"),
    responses((status = 200, body = ScheduleResponse), (status = 422, body = super::problem::ProblemBody),
              (status = 401), (status = 403)),
    security(("bearer" = [])))]
pub async fn put_operation(
    _access: AdminAccess,
    State(state): State<ApiState>,
    Path(name): Path<String>,
    body: Bytes,
) -> Result<Json<ScheduleResponse>, Problem> {
    let device = device_from_path(&name);
    let object = json_object(&body)?;
    let (fields, mut errors) = validate::fields_from_json(&object, &[]);
    let device = match device {
        Ok(d) => Some(d),
        Err(Problem::Invalid(mut e)) => {
            errors.append(&mut e);
            None
        }
        Err(other) => return Err(other),
    };
    let defaults = state.defaults();
    // The fields are checked even when the name is wrong, so every mistake is reported at
    // once; the stand-in name is never stored.
    let checked_as = device
        .clone()
        .unwrap_or_else(|| DeviceName::from_admin("SEP000000000000").expect("valid stand-in"));
    let valid = match validate::validate(&checked_as, &fields, &defaults) {
        Ok(v) if errors.is_empty() => Some(v),
        Ok(_) => None,
        Err(mut e) => {
            errors.append(&mut e);
            None
        }
    };
    let Some(mut valid) = valid else {
        return Err(Problem::Invalid(errors));
    };
    let generated = if valid.generate_auth_string {
        let s = AuthStringGenerator::default().generate();
        valid.op.auth_string = Some(s.clone());
        Some(s.0)
    } else {
        None
    };
    let op = state.store.schedule(valid.op, state.clock.now()).await?;
    Ok(Json(ScheduleResponse {
        device: op.device_name.as_str().to_string(),
        status: capf_model::status::describe(Some(op.status_of())),
        operation: OperationView::new(&op, false),
        auth_string: generated,
    }))
}

/// What `PUT .../operation` takes (documentation of the parser in `validate`).
#[derive(serde::Deserialize, utoipa::ToSchema)]
#[allow(dead_code)]
pub struct ScheduleRequestDoc {
    /// install (install/upgrade), delete or troubleshoot.
    operation: String,
    /// string, null, lsc or mic.
    auth_mode: String,
    /// 4-10 digits; with auth_mode string, unless generate_auth_string.
    auth_string: Option<String>,
    /// Generate a random 8-digit authentication string and return it.
    generate_auth_string: Option<bool>,
    /// rsa-1024|2048|3072|4096, ec-p256|p384|p521; default from the server's settings.
    key: Option<String>,
    /// RFC 3339, in the future; default now + the operation window (7 days).
    completes_by: Option<String>,
}

/// Cancels the device's pending operation.
#[utoipa::path(delete, path = "/api/v1/devices/{name}/operation", tag = "operations",
    params(("name" = String, Path)),
    responses((status = 200, body = OperationView), (status = 404)),
    security(("bearer" = [])))]
pub async fn delete_operation(
    _access: AdminAccess,
    State(state): State<ApiState>,
    Path(name): Path<String>,
) -> Result<Json<OperationView>, Problem> {
    let device = device_from_path(&name)?;
    match state.store.cancel(&device, state.clock.now()).await? {
        Some(op) => Ok(Json(OperationView::new(&op, false))),
        None => Err(Problem::NotFound(format!(
            "{device} has no pending operation"
        ))),
    }
}

/// The device, its latest operation and status, LSC, lock and last attempt.
#[utoipa::path(get, path = "/api/v1/devices/{name}", tag = "devices",
    params(("name" = String, Path)),
    responses((status = 200, body = DeviceView), (status = 404)),
    security(("bearer" = [])))]
pub async fn get_device(
    access: ReadAccess,
    State(state): State<ApiState>,
    Path(name): Path<String>,
) -> Result<Json<DeviceView>, Problem> {
    let name = device_from_path(&name)?;
    device_view(&state, &name, access.is_admin()).await
}

/// The device as the API shows it: settings, latest operation and status, current LSC.
async fn device_view(
    state: &ApiState,
    name: &DeviceName,
    show_secret: bool,
) -> Result<Json<DeviceView>, Problem> {
    let device = state
        .store
        .device(name)
        .await?
        .ok_or_else(|| Problem::NotFound(format!("no device {name}")))?;
    let op = state.store.latest_operation(name).await?;
    let lsc = state.store.current_certificate(name).await?;
    Ok(Json(DeviceView::new(
        &device,
        op.as_ref(),
        lsc.as_ref().map(LscView::from),
        show_secret,
        state.clock.now(),
    )))
}

/// Per-device settings that are not an operation.
#[utoipa::path(patch, path = "/api/v1/devices/{name}", tag = "devices",
    params(("name" = String, Path)),
    request_body(content = DeviceSettingsDoc, content_type = "application/json"),
    responses((status = 200, body = DeviceView), (status = 404), (status = 422)),
    security(("bearer" = [])))]
pub async fn patch_device(
    _access: AdminAccess,
    State(state): State<ApiState>,
    Path(name): Path<String>,
    body: Bytes,
) -> Result<Json<DeviceView>, Problem> {
    let name = device_from_path(&name)?;
    let object = json_object(&body)?;
    let mut errors = Vec::new();
    let mut require_sudi = None;
    for (field, value) in &object {
        match (field.as_str(), value) {
            ("require_sudi", Value::Bool(b)) => require_sudi = Some(*b),
            ("require_sudi", _) => errors.push(FieldError::new(field, "must be true or false")),
            _ => errors.push(FieldError::new(field, "Unknown field.")),
        }
    }
    if !errors.is_empty() {
        return Err(Problem::Invalid(errors));
    }
    if let Some(require) = require_sudi {
        state
            .store
            .set_require_sudi(&name, require, state.clock.now())
            .await?;
    }
    device_view(&state, &name, true).await
}

#[derive(serde::Deserialize, utoipa::ToSchema)]
#[allow(dead_code)]
pub struct DeviceSettingsDoc {
    /// Certificate authentication must carry a valid SUDI.
    require_sudi: Option<bool>,
}

/// Reads the listing's query string into a filter (and page size and cursor).
pub fn listing_filter(params: &HashMap<String, String>) -> Result<DeviceFilter, Problem> {
    let mut filter = DeviceFilter {
        limit: DEFAULT_PAGE,
        ..Default::default()
    };
    let mut errors = Vec::new();
    for (name, value) in params {
        match name.as_str() {
            "cursor" => match filters::name_fragment(name, value) {
                Ok(after) => filter.after_name = Some(after.to_string()),
                Err(e) => errors.push(e),
            },
            "limit" => match value.parse::<u32>() {
                Ok(n) if (1..=MAX_PAGE).contains(&n) => filter.limit = n,
                _ => errors.push(FieldError::new(
                    name,
                    format!("must be a number from 1 to {MAX_PAGE}"),
                )),
            },
            _ => match filters::apply(&mut filter, name, value) {
                Ok(true) => {}
                Ok(false) => errors.push(FieldError::new(name, "Unknown parameter.")),
                Err(e) => errors.push(e),
            },
        }
    }
    if errors.is_empty() {
        Ok(filter)
    } else {
        Err(Problem::Invalid(errors))
    }
}

/// Devices in name order, filtered, a page at a time.
#[utoipa::path(get, path = "/api/v1/devices", tag = "devices",
    params(
        ("status" = Option<String>, Query, description = "none|pending|success|failed|timed_out|cancelled"),
        ("operation" = Option<String>, Query, description = "install|delete|troubleshoot"),
        ("lsc" = Option<String>, Query, description = "present|absent"),
        ("lsc_expires_before" = Option<String>, Query, description = "date or RFC 3339"),
        ("prefix" = Option<String>, Query, description = "device name prefix"),
        ("limit" = Option<u32>, Query, description = "1-1000, default 100"),
        ("cursor" = Option<String>, Query, description = "next_cursor of the previous page")),
    responses((status = 200, body = DeviceList), (status = 422)),
    security(("bearer" = [])))]
pub async fn list_devices(
    _access: ReadAccess,
    State(state): State<ApiState>,
    UniqueQuery(params): UniqueQuery,
) -> Result<Json<DeviceList>, Problem> {
    let filter = listing_filter(&params)?;
    let rows = state.store.list_devices(&filter).await?;
    let now = state.clock.now();
    let next_cursor = if rows.len() as u32 == filter.limit {
        rows.last().map(|r| r.device.name.as_str().to_string())
    } else {
        None
    };
    Ok(Json(DeviceList {
        devices: rows
            .iter()
            .map(|s| DeviceView::from_summary(s, now))
            .collect(),
        next_cursor,
    }))
}

/// The device's installed LSC as PEM.
#[utoipa::path(get, path = "/api/v1/devices/{name}/certificate", tag = "devices",
    params(("name" = String, Path)),
    responses((status = 200, content_type = "application/x-pem-file", body = String), (status = 404)),
    security(("bearer" = [])))]
pub async fn certificate(
    _access: ReadAccess,
    State(state): State<ApiState>,
    Path(name): Path<String>,
) -> Result<Response, Problem> {
    let name = device_from_path(&name)?;
    let cert = state
        .store
        .current_certificate(&name)
        .await?
        .ok_or_else(|| Problem::NotFound(format!("{name} has no installed LSC")))?;
    Ok(([(header::CONTENT_TYPE, "application/x-pem-file")], cert.pem).into_response())
}

/// Every certificate of the device, newest first.
#[utoipa::path(get, path = "/api/v1/devices/{name}/certificates", tag = "devices",
    params(("name" = String, Path)),
    responses((status = 200, body = Vec<CertificateView>), (status = 404)),
    security(("bearer" = [])))]
pub async fn certificates(
    _access: ReadAccess,
    State(state): State<ApiState>,
    Path(name): Path<String>,
) -> Result<Json<Vec<CertificateView>>, Problem> {
    let name = device_from_path(&name)?;
    if state.store.device(&name).await?.is_none() {
        return Err(Problem::NotFound(format!("no device {name}")));
    }
    let certs = state.store.certificates(&name).await?;
    Ok(Json(certs.iter().map(CertificateView::from).collect()))
}

/// Clears the device's lock and failure count.
#[utoipa::path(post, path = "/api/v1/devices/{name}/unlock", tag = "devices",
    params(("name" = String, Path)),
    responses((status = 200, body = LockView), (status = 404)),
    security(("bearer" = [])))]
pub async fn unlock(
    _access: AdminAccess,
    State(state): State<ApiState>,
    Path(name): Path<String>,
) -> Result<Json<LockView>, Problem> {
    let name = device_from_path(&name)?;
    state.store.unlock(&name, state.clock.now()).await?;
    let lock = state.store.lock_state(&name).await?;
    Ok(Json(LockView {
        locked: lock.is_locked(state.clock.now()),
        locked_until: lock.locked_until,
        failed_auth_count: lock.failed_auth_count,
    }))
}

/// The audit trail, oldest first.
#[utoipa::path(get, path = "/api/v1/events", tag = "audit",
    params(
        ("device" = Option<String>, Query),
        ("since" = Option<String>, Query, description = "date or RFC 3339"),
        ("after" = Option<i64>, Query, description = "next_after of the previous page"),
        ("limit" = Option<u32>, Query, description = "1-1000, default 100")),
    responses((status = 200, body = EventList), (status = 422)),
    security(("bearer" = [])))]
pub async fn events(
    _access: ReadAccess,
    State(state): State<ApiState>,
    UniqueQuery(params): UniqueQuery,
) -> Result<Json<EventList>, Problem> {
    let mut filter = EventFilter {
        limit: DEFAULT_PAGE,
        ..Default::default()
    };
    let mut errors = Vec::new();
    for (name, value) in &params {
        match name.as_str() {
            "device" => match DeviceName::from_admin(value) {
                Ok(d) => filter.device_name = Some(d.as_str().to_string()),
                Err(e) => errors.push(FieldError::new(name, e.to_string())),
            },
            "since" => match filters::parse_time(name, value) {
                Ok(t) => filter.since = Some(t),
                Err(e) => errors.push(e),
            },
            "after" => match value.parse::<i64>() {
                Ok(n) => filter.after_id = Some(n),
                Err(_) => errors.push(FieldError::new(name, "must be an event id")),
            },
            "limit" => match value.parse::<u32>() {
                Ok(n) if (1..=MAX_PAGE).contains(&n) => filter.limit = n,
                _ => errors.push(FieldError::new(
                    name,
                    format!("must be a number from 1 to {MAX_PAGE}"),
                )),
            },
            _ => errors.push(FieldError::new(name, "Unknown parameter.")),
        }
    }
    if !errors.is_empty() {
        return Err(Problem::Invalid(errors));
    }
    let events = state.store.events(filter.clone()).await?;
    let next_after = if events.len() as u32 == filter.limit {
        events.last().map(|e| e.id)
    } else {
        None
    };
    Ok(Json(EventList {
        events: events.into_iter().map(EventView::from).collect(),
        next_after,
    }))
}
