//! The one error type of the API's handlers, and how each maps to an HTTP answer.
//! Every answer is JSON `{"error": "...", "fields": [...]}`; nothing internal leaks.

use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Serialize;

use super::validate::FieldError;
use capf_store::StoreError;

#[derive(Debug)]
pub enum Problem {
    /// No token, or not one we know.
    Unauthorized,
    /// A read-only token tried to change something.
    Forbidden,
    NotFound(String),
    /// One message per wrong field.
    Invalid(Vec<FieldError>),
    Conflict(String),
    TooLarge(String),
    /// The database is down or slow: try again.
    Unavailable,
    Internal,
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct ProblemBody {
    pub error: String,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub fields: Vec<FieldError>,
}

impl Problem {
    pub fn field(field: &str, message: impl Into<String>) -> Problem {
        Problem::Invalid(vec![FieldError::new(field, message)])
    }
}

impl From<StoreError> for Problem {
    fn from(e: StoreError) -> Problem {
        match e {
            StoreError::NotFound(what) => Problem::NotFound(format!("not found: {what}")),
            StoreError::Conflict(what) => Problem::Conflict(what.to_string()),
            StoreError::Unavailable(detail) => {
                tracing::warn!(error = %detail, "API: database unavailable");
                Problem::Unavailable
            }
            other => {
                tracing::error!(error = %other, "API: store error");
                Problem::Internal
            }
        }
    }
}

impl IntoResponse for Problem {
    fn into_response(self) -> Response {
        let (status, error, fields) = match self {
            Problem::Unauthorized => (
                StatusCode::UNAUTHORIZED,
                "a valid bearer token is required".to_string(),
                Vec::new(),
            ),
            Problem::Forbidden => (
                StatusCode::FORBIDDEN,
                "this token is read-only".to_string(),
                Vec::new(),
            ),
            Problem::NotFound(what) => (StatusCode::NOT_FOUND, what, Vec::new()),
            Problem::Invalid(fields) => (
                StatusCode::UNPROCESSABLE_ENTITY,
                "the request has invalid fields".to_string(),
                fields,
            ),
            Problem::Conflict(what) => (StatusCode::CONFLICT, what, Vec::new()),
            Problem::TooLarge(what) => (StatusCode::PAYLOAD_TOO_LARGE, what, Vec::new()),
            Problem::Unavailable => (
                StatusCode::SERVICE_UNAVAILABLE,
                "the database is unavailable; try again".to_string(),
                Vec::new(),
            ),
            Problem::Internal => (
                StatusCode::INTERNAL_SERVER_ERROR,
                "internal error (see the server log)".to_string(),
                Vec::new(),
            ),
        };
        let mut response = (status, Json(ProblemBody { error, fields })).into_response();
        if status == StatusCode::UNAUTHORIZED {
            response.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                header::HeaderValue::from_static("Bearer"),
            );
        }
        response
    }
}
