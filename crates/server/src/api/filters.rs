//! The device filters shared by the listing (query string) and bulk scheduling by query
//! (JSON object): `status`, `operation`, `lsc`, `lsc_expires_before`, `prefix`.

use chrono::{DateTime, NaiveDate, Utc};

use super::validate::FieldError;
use capf_model::operation::{OperationKind, OperationStatus};
use capf_store::{DeviceFilter, StatusFilter};

pub const FILTER_FIELDS: &[&str] = &["status", "operation", "lsc", "lsc_expires_before", "prefix"];

/// Applies one `name=value` filter to `filter`; `Ok(false)` when `name` is not a filter.
pub fn apply(filter: &mut DeviceFilter, name: &str, value: &str) -> Result<bool, FieldError> {
    let value = value.trim();
    match name {
        "status" => {
            filter.status = Some(match value {
                "none" => StatusFilter::None,
                "pending" => StatusFilter::Is(OperationStatus::Pending),
                "success" => StatusFilter::Is(OperationStatus::Success),
                "failed" => StatusFilter::Is(OperationStatus::Failed),
                "timed_out" => StatusFilter::Is(OperationStatus::TimedOut),
                "cancelled" => StatusFilter::Is(OperationStatus::Cancelled),
                _ => {
                    return Err(FieldError::new(
                        name,
                        "must be none, pending, success, failed, timed_out or cancelled",
                    ))
                }
            })
        }
        "operation" => {
            filter.operation = Some(match value {
                "install" => OperationKind::Install,
                "delete" => OperationKind::Delete,
                "troubleshoot" => OperationKind::Troubleshoot,
                _ => {
                    return Err(FieldError::new(
                        name,
                        "must be install, delete or troubleshoot",
                    ))
                }
            })
        }
        "lsc" => {
            filter.has_lsc = Some(match value {
                "present" => true,
                "absent" => false,
                _ => return Err(FieldError::new(name, "must be present or absent")),
            })
        }
        "lsc_expires_before" => filter.lsc_expires_before = Some(parse_time(name, value)?),
        "prefix" => {
            name_fragment(name, value)?;
            // SEP names are stored upper-case.
            filter.name_prefix = Some(
                if value.len() >= 3 && value[..3].eq_ignore_ascii_case("SEP") {
                    value.to_ascii_uppercase()
                } else {
                    value.to_string()
                },
            );
        }
        _ => return Ok(false),
    }
    Ok(true)
}

/// `value`, a device name or the start of one (a prefix, a listing cursor): the characters
/// device names are made of, no longer than one. Checked here so that nothing else (a NUL,
/// which PostgreSQL refuses in text) reaches the database.
pub fn name_fragment<'a>(name: &str, value: &'a str) -> Result<&'a str, FieldError> {
    if value.len() > capf_model::device::MAX_NAME_LEN
        || !value
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
    {
        return Err(FieldError::new(
            name,
            "must be a device name or its start (letters, numbers, '.', '_', '-')",
        ));
    }
    Ok(value)
}

/// RFC 3339, or a plain date (midnight UTC).
pub fn parse_time(name: &str, value: &str) -> Result<DateTime<Utc>, FieldError> {
    if let Ok(t) = DateTime::parse_from_rfc3339(value) {
        return Ok(t.with_timezone(&Utc));
    }
    if let Ok(d) = NaiveDate::parse_from_str(value, "%Y-%m-%d") {
        if let Some(t) = d.and_hms_opt(0, 0, 0) {
            return Ok(t.and_utc());
        }
    }
    Err(FieldError::new(
        name,
        "must be a date (2026-12-31) or a date and time in RFC 3339 form",
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filters_parse() {
        let mut f = DeviceFilter::default();
        assert!(apply(&mut f, "status", "none").unwrap());
        assert!(apply(&mut f, "lsc", "absent").unwrap());
        assert!(apply(&mut f, "prefix", "sep0011").unwrap());
        assert!(apply(&mut f, "lsc_expires_before", "2027-01-01").unwrap());
        assert!(!apply(&mut f, "limit", "3").unwrap());
        assert_eq!(f.status, Some(StatusFilter::None));
        assert_eq!(f.has_lsc, Some(false));
        assert_eq!(f.name_prefix.as_deref(), Some("SEP0011"));
        assert_eq!(
            f.lsc_expires_before.unwrap().to_rfc3339(),
            "2027-01-01T00:00:00+00:00"
        );
        assert!(apply(&mut f, "status", "weird").is_err());
        assert!(apply(&mut f, "prefix", "SEP%").is_err());
        assert!(apply(&mut f, "lsc_expires_before", "soon").is_err());
    }
}
