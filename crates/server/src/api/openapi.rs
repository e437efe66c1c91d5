//! The OpenAPI document, generated from the handlers' annotations and the view types.

use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};

use super::{bulk, devices, problem, validate, views};

#[derive(OpenApi)]
#[openapi(
    info(
        title = "capf admin API",
        description = "Schedule, track and bulk-manage CAPF certificate operations of Cisco \
                       IP phones. Every /api/ route needs `Authorization: Bearer <token>`; \
                       read-only tokens may only GET."
    ),
    paths(
        devices::list_devices,
        devices::get_device,
        devices::patch_device,
        devices::put_operation,
        devices::delete_operation,
        devices::certificate,
        devices::certificates,
        devices::unlock,
        devices::events,
        bulk::bulk,
        bulk::report,
    ),
    components(schemas(
        views::DeviceView,
        views::DeviceList,
        views::OperationView,
        views::ScheduleResponse,
        views::CertificateView,
        views::EventList,
        views::LockView,
        bulk::BulkResult,
        bulk::RowError,
        problem::ProblemBody,
        validate::FieldError,
    )),
    modifiers(&BearerAuth),
    tags(
        (name = "operations", description = "Certificate operations: install/upgrade, delete, troubleshoot"),
        (name = "devices", description = "Devices, their LSCs, lock state and the CAPF report"),
        (name = "audit", description = "The audit trail"),
    )
)]
pub struct ApiDoc;

struct BearerAuth;

impl Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
        );
    }
}

/// The document as JSON text.
pub fn json() -> String {
    ApiDoc::openapi()
        .to_pretty_json()
        .unwrap_or_else(|e| format!("{{\"error\": \"{e}\"}}"))
}
