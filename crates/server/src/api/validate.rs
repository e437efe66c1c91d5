//! Turning what an administrator sent (a JSON object, a CSV row) into an operation to
//! schedule, with one message per wrong field in the spirit of CUCM's own.
//!
//! Pure functions, no I/O: the API, the bulk importer and the fuzz target share them.

use std::collections::HashSet;

use chrono::{DateTime, Utc};
use rand::Rng;
use serde::Serialize;
use serde_json::{Map, Value};

use capf_model::device::DeviceName;
use capf_model::keyspec::KeySpec;
use capf_model::operation::{AuthMode, OperationKind};
use capf_store::{AuthString, NewOperation, Timestamp};

pub const AUTH_STRING_MIN: usize = 4;
pub const AUTH_STRING_MAX: usize = 10;
/// Length of a generated authentication string.
pub const GENERATED_LEN: usize = 8;

pub const MSG_AUTH_CHARS: &str =
    "Authentication String contains one or more invalid characters. Valid characters are numbers.";
pub const MSG_AUTH_LENGTH: &str = "Authentication String length should be between 4 and 10.";
pub const MSG_COMPLETES_BY_PAST: &str = "Operation Completes By must be in the future.";
pub const MSG_COMPLETES_BY_FORMAT: &str =
    "Operation Completes By must be a date and time in RFC 3339 form, e.g. 2026-12-31T17:00:00Z.";
pub const MSG_OPERATION: &str = "Certificate Operation must be install, delete or troubleshoot.";
pub const MSG_AUTH_MODE: &str = "Authentication Mode must be string, null, lsc or mic.";
pub const MSG_KEY: &str =
    "Key must be one of rsa-1024, rsa-2048, rsa-3072, rsa-4096, ec-p256, ec-p384, ec-p521.";
pub const MSG_AUTH_REQUIRED: &str = "Authentication String is required when Authentication Mode \
     is string (or ask for one with generate_auth_string).";
pub const MSG_AUTH_NOT_STRING_MODE: &str =
    "Authentication String is used only when Authentication Mode is string.";
pub const MSG_AUTH_BOTH: &str =
    "Give either an Authentication String or generate_auth_string, not both.";

/// One wrong field.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct FieldError {
    pub field: String,
    pub message: String,
}

impl FieldError {
    pub fn new(field: &str, message: impl Into<String>) -> FieldError {
        FieldError {
            field: field.to_string(),
            message: message.into(),
        }
    }
}

/// The fields of an operation request, as text, before validation.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct OperationFields {
    pub operation: Option<String>,
    pub auth_mode: Option<String>,
    pub auth_string: Option<String>,
    pub generate_auth_string: bool,
    pub key: Option<String>,
    pub completes_by: Option<String>,
}

/// What applies when a request leaves something out.
#[derive(Clone, Copy, Debug)]
pub struct Defaults {
    pub key: KeySpec,
    pub window: chrono::Duration,
    pub now: Timestamp,
}

/// A valid request: the operation, and whether its authentication string is still to be
/// generated (then `op.auth_string` is `None`).
#[derive(Clone, Debug, PartialEq)]
pub struct ValidOperation {
    pub op: NewOperation,
    pub generate_auth_string: bool,
}

pub const OPERATION_FIELDS: &[&str] = &[
    "operation",
    "auth_mode",
    "auth_string",
    "generate_auth_string",
    "key",
    "completes_by",
];

/// Reads the operation fields of a JSON object; `extra` names further fields the caller
/// accepts (they are left to it). Unknown fields and wrong types are errors.
pub fn fields_from_json(
    object: &Map<String, Value>,
    extra: &[&str],
) -> (OperationFields, Vec<FieldError>) {
    let mut fields = OperationFields::default();
    let mut errors = Vec::new();
    for (name, value) in object {
        let text = || -> Result<Option<String>, FieldError> {
            match value {
                Value::Null => Ok(None),
                Value::String(s) => Ok(Some(s.clone())),
                _ => Err(FieldError::new(name, "must be text")),
            }
        };
        let result = match name.as_str() {
            "operation" => text().map(|v| fields.operation = v),
            "auth_mode" => text().map(|v| fields.auth_mode = v),
            "key" => text().map(|v| fields.key = v),
            "completes_by" => text().map(|v| fields.completes_by = v),
            // Digits typed without quotes are still digits; other numbers are refused below.
            "auth_string" => match value {
                Value::Number(n) if n.is_u64() => {
                    fields.auth_string = Some(n.to_string());
                    Ok(())
                }
                _ => text().map(|v| fields.auth_string = v),
            },
            "generate_auth_string" => match value {
                Value::Bool(b) => {
                    fields.generate_auth_string = *b;
                    Ok(())
                }
                Value::Null => Ok(()),
                _ => Err(FieldError::new(name, "must be true or false")),
            },
            other if extra.contains(&other) => Ok(()),
            _ => Err(FieldError::new(name, "Unknown field.")),
        };
        if let Err(e) = result {
            errors.push(e);
        }
    }
    (fields, errors)
}

/// Checks every field and builds the operation for `device`. All problems are reported, not
/// only the first.
pub fn validate(
    device: &DeviceName,
    fields: &OperationFields,
    defaults: &Defaults,
) -> Result<ValidOperation, Vec<FieldError>> {
    let mut errors = Vec::new();
    let kind = match fields.operation.as_deref().map(str::trim) {
        Some("install") | Some("upgrade") => Some(OperationKind::Install),
        Some("delete") => Some(OperationKind::Delete),
        Some("troubleshoot") => Some(OperationKind::Troubleshoot),
        _ => {
            errors.push(FieldError::new("operation", MSG_OPERATION));
            None
        }
    };
    let mode = match fields.auth_mode.as_deref().map(str::trim) {
        Some("string") => Some(AuthMode::String),
        Some("null") => Some(AuthMode::Null),
        Some("lsc") => Some(AuthMode::Lsc),
        Some("mic") => Some(AuthMode::Mic),
        _ => {
            errors.push(FieldError::new("auth_mode", MSG_AUTH_MODE));
            None
        }
    };
    let auth_string = fields.auth_string.as_deref();
    if let Some(s) = auth_string {
        if let Some(message) = check_auth_string(s) {
            errors.push(FieldError::new("auth_string", message));
        }
    }
    match (mode, auth_string, fields.generate_auth_string) {
        (Some(AuthMode::String), Some(_), true) => {
            errors.push(FieldError::new("auth_string", MSG_AUTH_BOTH));
        }
        (Some(AuthMode::String), None, false) => {
            errors.push(FieldError::new("auth_string", MSG_AUTH_REQUIRED));
        }
        (Some(AuthMode::Null | AuthMode::Lsc | AuthMode::Mic), Some(_), _) => {
            errors.push(FieldError::new("auth_string", MSG_AUTH_NOT_STRING_MODE));
        }
        (Some(AuthMode::Null | AuthMode::Lsc | AuthMode::Mic), None, true) => {
            errors.push(FieldError::new(
                "generate_auth_string",
                MSG_AUTH_NOT_STRING_MODE,
            ));
        }
        _ => {}
    }
    let key = match fields.key.as_deref().map(str::trim) {
        None | Some("") => Some(defaults.key),
        Some(text) => match text.parse::<KeySpec>() {
            Ok(k) => Some(k),
            Err(_) => {
                errors.push(FieldError::new("key", MSG_KEY));
                None
            }
        },
    };
    let completes_by = match fields.completes_by.as_deref().map(str::trim) {
        None | Some("") => Some(defaults.now + defaults.window),
        Some(text) => match DateTime::parse_from_rfc3339(text) {
            Ok(t) => {
                let t = t.with_timezone(&Utc);
                if t <= defaults.now {
                    errors.push(FieldError::new("completes_by", MSG_COMPLETES_BY_PAST));
                    None
                } else {
                    Some(t)
                }
            }
            Err(_) => {
                errors.push(FieldError::new("completes_by", MSG_COMPLETES_BY_FORMAT));
                None
            }
        },
    };
    match (kind, mode, key, completes_by) {
        (Some(kind), Some(auth_mode), Some(key), Some(completes_by)) if errors.is_empty() => {
            Ok(ValidOperation {
                op: NewOperation {
                    device_name: device.clone(),
                    kind,
                    auth_mode,
                    auth_string: auth_string.map(|s| AuthString(s.to_string())),
                    key,
                    completes_by,
                },
                generate_auth_string: fields.generate_auth_string,
            })
        }
        _ => Err(errors),
    }
}

/// CUCM's checks of an authentication string: digits only, 4 to 10 of them.
pub fn check_auth_string(s: &str) -> Option<&'static str> {
    if !s.bytes().all(|b| b.is_ascii_digit()) {
        Some(MSG_AUTH_CHARS)
    } else if !(AUTH_STRING_MIN..=AUTH_STRING_MAX).contains(&s.len()) {
        Some(MSG_AUTH_LENGTH)
    } else {
        None
    }
}

/// Random authentication strings, each different from every other handed out by this
/// generator (a bulk import gets a unique string per device).
#[derive(Debug)]
pub struct AuthStringGenerator {
    issued: HashSet<String>,
    // A CSPRNG seeded once from the OS: 100,000 strings cost no 800,000 system calls.
    rng: rand::rngs::StdRng,
}

impl Default for AuthStringGenerator {
    fn default() -> Self {
        AuthStringGenerator {
            issued: HashSet::new(),
            rng: rand::SeedableRng::from_entropy(),
        }
    }
}

impl AuthStringGenerator {
    pub fn generate(&mut self) -> AuthString {
        loop {
            let s: String = (0..GENERATED_LEN)
                .map(|_| char::from(b'0' + self.rng.gen_range(0..10u8)))
                .collect();
            if self.issued.insert(s.clone()) {
                return AuthString(s);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn defaults() -> Defaults {
        Defaults {
            key: KeySpec::Rsa(2048),
            window: chrono::Duration::days(7),
            now: Utc::now(),
        }
    }

    fn device() -> DeviceName {
        DeviceName::from_admin("SEP001122334455").unwrap()
    }

    fn check(body: Value) -> Result<ValidOperation, Vec<FieldError>> {
        let (fields, errors) = fields_from_json(body.as_object().unwrap(), &[]);
        assert!(errors.is_empty(), "{errors:?}");
        validate(&device(), &fields, &defaults())
    }

    fn messages(body: Value) -> Vec<(String, String)> {
        check(body)
            .unwrap_err()
            .into_iter()
            .map(|e| (e.field, e.message))
            .collect()
    }

    #[test]
    fn a_full_request_is_accepted_and_defaults_fill_in() {
        let v = check(json!({"operation": "install", "auth_mode": "string",
                             "auth_string": "123456"}))
        .unwrap();
        assert_eq!(v.op.kind, OperationKind::Install);
        assert_eq!(v.op.key, KeySpec::Rsa(2048));
        assert_eq!(v.op.auth_string, Some(AuthString("123456".into())));
        let week = defaults().now + chrono::Duration::days(7);
        assert!((v.op.completes_by - week).num_seconds().abs() < 5);
        let v = check(
            json!({"operation": "delete", "auth_mode": "lsc", "key": "ec-p384",
                             "completes_by": "2999-01-01T00:00:00+01:00"}),
        )
        .unwrap();
        assert_eq!(v.op.key.to_string(), "ec-p384");
        assert_eq!(v.op.completes_by.to_rfc3339(), "2998-12-31T23:00:00+00:00");
        let v = check(json!({"operation": "install", "auth_mode": "string",
                             "generate_auth_string": true}))
        .unwrap();
        assert!(v.generate_auth_string && v.op.auth_string.is_none());
        // Unquoted digits are digits.
        let v = check(json!({"operation": "install", "auth_mode": "string",
                             "auth_string": 4321}))
        .unwrap();
        assert_eq!(v.op.auth_string, Some(AuthString("4321".into())));
    }

    #[test]
    fn cucm_messages() {
        let base = |extra: Value| {
            let mut body = json!({"operation": "install", "auth_mode": "string"});
            body.as_object_mut()
                .unwrap()
                .extend(extra.as_object().unwrap().clone());
            messages(body)
        };
        assert_eq!(
            base(json!({"auth_string": "12a4"})),
            vec![("auth_string".into(), MSG_AUTH_CHARS.into())]
        );
        assert_eq!(
            base(json!({"auth_string": "123"})),
            vec![("auth_string".into(), MSG_AUTH_LENGTH.into())]
        );
        assert_eq!(
            base(json!({"auth_string": "12345678901"})),
            vec![("auth_string".into(), MSG_AUTH_LENGTH.into())]
        );
        assert_eq!(
            base(json!({"auth_string": "1234", "completes_by": "2001-01-01T00:00:00Z"})),
            vec![("completes_by".into(), MSG_COMPLETES_BY_PAST.into())]
        );
        assert_eq!(
            base(json!({"auth_string": "1234", "completes_by": "tomorrow"})),
            vec![("completes_by".into(), MSG_COMPLETES_BY_FORMAT.into())]
        );
        assert_eq!(
            base(json!({})),
            vec![("auth_string".into(), MSG_AUTH_REQUIRED.into())]
        );
        assert_eq!(
            base(json!({"auth_string": "1234", "generate_auth_string": true})),
            vec![("auth_string".into(), MSG_AUTH_BOTH.into())]
        );
        assert_eq!(
            base(json!({"auth_string": "1234", "key": "rsa-512"})),
            vec![("key".into(), MSG_KEY.into())]
        );
        assert_eq!(
            messages(json!({"operation": "install", "auth_mode": "null", "auth_string": "1234"})),
            vec![("auth_string".into(), MSG_AUTH_NOT_STRING_MODE.into())]
        );
        // Every wrong field is reported at once.
        let all = messages(json!({"operation": "reboot", "auth_mode": "password",
                                  "auth_string": "x", "key": "dsa"}));
        let fields: Vec<&str> = all.iter().map(|(f, _)| f.as_str()).collect();
        assert_eq!(fields, ["operation", "auth_mode", "auth_string", "key"]);
    }

    #[test]
    fn unknown_fields_and_wrong_types_are_named() {
        let body = json!({"operation": 3, "colour": "red", "generate_auth_string": "yes"});
        let (_, errors) = fields_from_json(body.as_object().unwrap(), &[]);
        let mut fields: Vec<&str> = errors.iter().map(|e| e.field.as_str()).collect();
        fields.sort();
        assert_eq!(fields, ["colour", "generate_auth_string", "operation"]);
    }

    #[test]
    fn generated_strings_are_valid_and_unique() {
        let mut generator = AuthStringGenerator::default();
        let mut seen = HashSet::new();
        for _ in 0..2000 {
            let s = generator.generate().0;
            assert_eq!(check_auth_string(&s), None);
            assert!(seen.insert(s));
        }
    }
}
