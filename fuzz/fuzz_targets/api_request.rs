//! The admin API's request parsing and validation on arbitrary bodies, called directly (no
//! HTTP): the first byte picks what the rest is.
//!
//! * 0: a bulk CSV body (`bulk::parse_csv`), then every row validated (`bulk::validate_rows`);
//! * 1: a bulk JSON body (`bulk::parse_json`), rows validated the same way;
//! * 2: `PUT /api/v1/devices/{name}/operation`: a device name from the path (up to the first
//!   newline) and a JSON body, parsed and validated as the handler does;
//! * 3: the listing's query parameters (`name=value` pairs separated by `&`) and the filters
//!   they set (`devices::listing_filter`).
//!
//! Checked: no panic, and every operation that validates is one an administrator may
//! schedule (its device name is valid in admin form, it ends after "now", a string-mode
//! operation has a 4-10 digit string unless one is still to be generated).
#![no_main]

use std::collections::HashMap;

use capf_server::api::bulk::{self, BulkRow};
use capf_server::api::devices::{device_from_path, json_object, listing_filter};
use capf_server::api::validate::{self, check_auth_string, Defaults};
use capf_model::device::DeviceName;
use capf_model::keyspec::KeySpec;
use capf_model::operation::AuthMode;
use capf_store::NewOperation;
use chrono::{Duration, TimeZone, Utc};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&mode, body)) = data.split_first() else {
        return;
    };
    let defaults = defaults();
    match mode & 0x03 {
        0 => {
            if let Ok(rows) = bulk::parse_csv(body) {
                rows_validate(&rows, mode & 0x80 != 0, &defaults);
            }
        }
        1 => {
            if let Ok(request) = bulk::parse_json(body) {
                rows_validate(&request.rows, request.generate_auth_strings, &defaults);
                let _ = (request.dry_run, request.query, request.template);
            }
        }
        2 => schedule_request(body, &defaults),
        _ => listing(body),
    }
});

/// Fixed, so runs repeat: the day the window opens, and CUCM's default of a week.
fn defaults() -> Defaults {
    Defaults {
        key: KeySpec::Rsa(2048),
        window: Duration::days(7),
        now: Utc
            .with_ymd_and_hms(2026, 6, 1, 12, 0, 0)
            .single()
            .unwrap_or_default(),
    }
}

fn check_operation(op: &NewOperation, to_generate: bool, defaults: &Defaults) {
    let name = op.device_name.as_str();
    assert_eq!(
        DeviceName::from_admin(name).as_ref(),
        Ok(&op.device_name),
        "a validated name is valid and in its stored form"
    );
    assert!(op.completes_by > defaults.now, "ends in the past: {op:?}");
    match (op.auth_mode, &op.auth_string) {
        (AuthMode::String, Some(s)) => assert_eq!(check_auth_string(&s.0), None, "{op:?}"),
        (AuthMode::String, None) => assert!(to_generate, "string mode without a string"),
        (_, Some(_)) => panic!("a string outside string mode: {op:?}"),
        (_, None) => {}
    }
}

fn rows_validate(rows: &[BulkRow], generate: bool, defaults: &Defaults) {
    let (ops, generated, errors) = bulk::validate_rows(rows, generate, defaults);
    // Every row either becomes an operation or is reported.
    assert!(ops.len() <= rows.len());
    assert!(ops.len() == rows.len() || !errors.is_empty());
    for op in &ops {
        // validate_rows fills in the strings it generates.
        check_operation(op, false, defaults);
    }
    for g in &generated {
        assert_eq!(check_auth_string(&g.auth_string), None);
    }
    for e in &errors {
        let _ = (e.line, &e.device, &e.field, &e.message);
    }
}

fn schedule_request(input: &[u8], defaults: &Defaults) {
    let (path, body) = match input.iter().position(|&b| b == b'\n') {
        Some(at) => (&input[..at], &input[at + 1..]),
        None => (input, &[][..]),
    };
    // Axum hands the handler a percent-decoded UTF-8 path segment.
    let Ok(path) = std::str::from_utf8(path) else {
        return;
    };
    let device = device_from_path(path);
    let Ok(object) = json_object(body) else {
        return;
    };
    let (fields, errors) = validate::fields_from_json(&object, &[]);
    let checked_as = match &device {
        Ok(d) => d.clone(),
        Err(_) => DeviceName::from_admin("SEP000000000000").expect("valid stand-in"),
    };
    match validate::validate(&checked_as, &fields, defaults) {
        Ok(valid) if errors.is_empty() && device.is_ok() => {
            check_operation(&valid.op, valid.generate_auth_string, defaults);
        }
        Ok(_) => {}
        Err(errors) => assert!(!errors.is_empty(), "refused without saying why"),
    }
}

fn listing(input: &[u8]) {
    let text = String::from_utf8_lossy(input);
    let params: HashMap<String, String> = text
        .split('&')
        .filter_map(|pair| pair.split_once('='))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    if let Ok(filter) = listing_filter(&params) {
        assert!((1..=capf_server::api::devices::MAX_PAGE).contains(&filter.limit));
    }
}
