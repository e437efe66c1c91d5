//! The device names the simulated phones use, and their scheduling.
//!
//! With `--schedule`, names are `SEP` + 12 hex digits: a random 16-bit run prefix (so runs
//! against one server do not collide), one digit for the group (measured or held) and a
//! 7-digit counter. Every name of a run's group shares a prefix, which is how a test (or an
//! operator) finds that run's devices in a listing. With `--devices FILE` the names are the
//! user's, scheduled elsewhere: how the bench is pointed at a server that is not capf.

use std::path::{Path, PathBuf};

use serde_json::Value;

use crate::client::{ApiClient, ClientError};
use capf_model::device::DeviceName;
use capf_model::keyspec::KeySpec;

/// Most rows sent in one bulk request (the API takes up to 100,000; smaller requests keep
/// each transaction and its memory moderate).
pub(super) const CHUNK: usize = 50_000;
/// Names one group can have: the counter has 7 hex digits.
pub(super) const MAX_PER_GROUP: usize = 1 << 28;

#[derive(Debug, thiserror::Error)]
pub enum DevicesError {
    #[error("cannot read {path}: {message}")]
    File { path: PathBuf, message: String },
    #[error("{path} line {line}: {name:?} is not a device name a phone can send: {message}")]
    BadName {
        path: PathBuf,
        line: usize,
        name: String,
        message: String,
    },
    #[error("{path} names {have} devices; {need} are needed (--phones plus --hold)")]
    TooFew {
        path: PathBuf,
        have: usize,
        need: usize,
    },
    #[error("at most {MAX_PER_GROUP} phones (and held sessions) per run")]
    TooMany,
    #[error("scheduling the devices through the admin API: {0}")]
    Api(#[from] ClientError),
    #[error(
        "the admin API refused the schedule ({scheduled} of {rows} rows scheduled): {message}"
    )]
    Refused {
        rows: usize,
        scheduled: u64,
        message: String,
    },
}

/// The two groups of a run: sessions measured, and sessions held open.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Group {
    Measured,
    Held,
}

/// Names `SEP` + run (4 hex digits) + group (1) + counter (7).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct RunNames {
    pub run: u16,
}

impl RunNames {
    pub(super) fn random() -> RunNames {
        RunNames {
            run: rand::random(),
        }
    }

    /// What every name of `group` starts with.
    pub(super) fn prefix(&self, group: Group) -> String {
        let digit = match group {
            Group::Measured => 0,
            Group::Held => 1,
        };
        format!("SEP{:04X}{digit:X}", self.run)
    }

    /// The first `count` names of `group`.
    pub(super) fn names(&self, group: Group, count: usize) -> Result<Vec<String>, DevicesError> {
        if count > MAX_PER_GROUP {
            return Err(DevicesError::TooMany);
        }
        let prefix = self.prefix(group);
        Ok((0..count).map(|i| format!("{prefix}{i:07X}")).collect())
    }
}

/// Reads one device name per line; blank lines and lines starting with `#` are skipped.
/// Names are checked as the wire accepts them (the server decides whether it knows them).
pub(super) fn read_file(path: &Path) -> Result<Vec<String>, DevicesError> {
    let text = std::fs::read_to_string(path).map_err(|e| DevicesError::File {
        path: path.to_path_buf(),
        message: e.to_string(),
    })?;
    let mut names = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let name = line.trim();
        if name.is_empty() || name.starts_with('#') {
            continue;
        }
        DeviceName::from_wire(name).map_err(|e| DevicesError::BadName {
            path: path.to_path_buf(),
            line: i + 1,
            name: name.to_string(),
            message: e.to_string(),
        })?;
        names.push(name.to_string());
    }
    Ok(names)
}

/// What every scheduled operation looks like.
#[derive(Debug, Clone)]
pub(super) struct Schedule {
    pub key: KeySpec,
    /// `None`: null string; otherwise the authentication string.
    pub auth_string: Option<String>,
}

impl Schedule {
    /// A bulk CSV body for `names` (completes_by left to the server's window).
    fn csv(&self, names: &[String]) -> Vec<u8> {
        let (mode, string) = match &self.auth_string {
            Some(s) => ("string", s.as_str()),
            None => ("null", ""),
        };
        let mut body = String::with_capacity(names.len() * 48 + 64);
        body.push_str("device,operation,auth_mode,auth_string,key,completes_by\n");
        for name in names {
            body.push_str(name);
            body.push_str(",install,");
            body.push_str(mode);
            body.push(',');
            body.push_str(string);
            body.push(',');
            body.push_str(self.key.as_str());
            body.push_str(",\n");
        }
        body.into_bytes()
    }
}

/// Schedules an install for every name through capf's bulk API, in chunks of [`CHUNK`].
/// Returns how many were scheduled.
pub(super) async fn schedule(
    client: &ApiClient,
    names: &[String],
    schedule: &Schedule,
) -> Result<u64, DevicesError> {
    let mut scheduled = 0u64;
    for chunk in names.chunks(CHUNK) {
        let result = client.bulk_csv(schedule.csv(chunk), false, false).await?;
        let done = result.get("scheduled").and_then(Value::as_u64).unwrap_or(0);
        let errors = result
            .get("errors")
            .and_then(Value::as_array)
            .map(Vec::as_slice)
            .unwrap_or_default();
        if !errors.is_empty() || done != chunk.len() as u64 {
            let message = errors
                .iter()
                .take(3)
                .map(|e| {
                    format!(
                        "{}: {}",
                        e.get("field").and_then(Value::as_str).unwrap_or("?"),
                        e.get("message").and_then(Value::as_str).unwrap_or("?")
                    )
                })
                .collect::<Vec<_>>()
                .join("; ");
            return Err(DevicesError::Refused {
                rows: names.len(),
                scheduled,
                message: if message.is_empty() {
                    result.to_string()
                } else {
                    message
                },
            });
        }
        scheduled += done;
    }
    Ok(scheduled)
}

#[cfg(test)]
mod tests {
    use super::*;
    use capf_model::keyspec::Curve;

    #[test]
    fn run_names_are_valid_unique_and_grouped() {
        let run = RunNames { run: 0x1a2b };
        let measured = run.names(Group::Measured, 3).unwrap();
        let held = run.names(Group::Held, 2).unwrap();
        assert_eq!(
            measured,
            ["SEP1A2B00000000", "SEP1A2B00000001", "SEP1A2B00000002"]
        );
        assert_eq!(held, ["SEP1A2B10000000", "SEP1A2B10000001"]);
        for name in measured.iter().chain(&held) {
            assert_eq!(DeviceName::from_admin(name).unwrap().as_str(), name);
            assert!(DeviceName::from_wire(name).is_ok());
        }
        assert!(measured
            .iter()
            .all(|n| n.starts_with(&run.prefix(Group::Measured))));
        // The counter's last value still makes a valid name.
        let last = format!("{}{:07X}", run.prefix(Group::Held), MAX_PER_GROUP - 1);
        assert_eq!(last, "SEP1A2B1FFFFFFF");
        assert!(DeviceName::from_wire(&last).is_ok());
        assert!(matches!(
            run.names(Group::Held, MAX_PER_GROUP + 1),
            Err(DevicesError::TooMany)
        ));
    }

    #[test]
    fn csv_rows() {
        let names = vec!["SEP000000000001".to_string()];
        let null = Schedule {
            key: KeySpec::Ec(Curve::P256),
            auth_string: None,
        };
        assert_eq!(
            String::from_utf8(null.csv(&names)).unwrap(),
            "device,operation,auth_mode,auth_string,key,completes_by\n\
             SEP000000000001,install,null,,ec-p256,\n"
        );
        let string = Schedule {
            key: KeySpec::Rsa(2048),
            auth_string: Some("123456".into()),
        };
        let rows = capf_server::api::bulk::parse_csv(&string.csv(&names)).unwrap();
        assert_eq!(rows.len(), 1);
        assert_eq!(rows[0].fields.auth_string.as_deref(), Some("123456"));
        assert_eq!(rows[0].fields.key.as_deref(), Some("rsa-2048"));
        assert_eq!(rows[0].fields.completes_by, None);
    }

    #[test]
    fn devices_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("devices.txt");
        std::fs::write(&path, "# lab phones\nSEP001122334455\n\n  CSFJDOE \n").unwrap();
        assert_eq!(read_file(&path).unwrap(), ["SEP001122334455", "CSFJDOE"]);
        std::fs::write(&path, "SEP001122334455\nSEP12\n").unwrap();
        assert!(matches!(
            read_file(&path),
            Err(DevicesError::BadName { line: 2, .. })
        ));
        assert!(matches!(
            read_file(&dir.path().join("missing")),
            Err(DevicesError::File { .. })
        ));
    }
}
