//! Device names: what a phone may call itself on the wire, and what an administrator may
//! schedule.
//!
//! Spec 8.5: the wire accepts 1-15 characters of `[A-Za-z0-9._-]`; a name starting with `SEP`
//! must be `SEP` plus 12 hex digits (it names a MAC address), otherwise it can never match a
//! device. The admin form is stricter: SEP names upper-case, softphone names as CUCM allows.

use std::fmt;

use serde::{Deserialize, Serialize};

pub const MAX_NAME_LEN: usize = 15;

#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(transparent)]
pub struct DeviceName(String);

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DeviceNameError {
    #[error("Device Name is empty.")]
    Empty,
    #[error("Device Name is longer than 15 characters.")]
    TooLong,
    #[error("Device Name contains invalid characters. Valid characters are letters, numbers, '.', '_' and '-'.")]
    InvalidCharacter,
    #[error("Device Name starting with SEP must be SEP followed by 12 hexadecimal digits.")]
    BadSepName,
}

impl DeviceName {
    /// Accepts a name as a phone sends it (without the NUL). Matching is case-sensitive,
    /// so nothing is rewritten here.
    pub fn from_wire(name: &str) -> Result<DeviceName, DeviceNameError> {
        check_common(name)?;
        if let Some(mac) = name.strip_prefix("SEP") {
            if mac.len() != 12 || !mac.bytes().all(|b| b.is_ascii_hexdigit()) {
                return Err(DeviceNameError::BadSepName);
            }
        }
        Ok(DeviceName(name.to_string()))
    }

    /// Accepts a name from an administrator: SEP names (any case) are stored upper-case,
    /// as phones send them.
    pub fn from_admin(name: &str) -> Result<DeviceName, DeviceNameError> {
        check_common(name)?;
        if name.len() >= 3 && name[..3].eq_ignore_ascii_case("SEP") {
            let mac = &name[3..];
            if mac.len() != 12 || !mac.bytes().all(|b| b.is_ascii_hexdigit()) {
                return Err(DeviceNameError::BadSepName);
            }
            return Ok(DeviceName(name.to_ascii_uppercase()));
        }
        Ok(DeviceName(name.to_string()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

fn check_common(name: &str) -> Result<(), DeviceNameError> {
    if name.is_empty() {
        return Err(DeviceNameError::Empty);
    }
    if name.len() > MAX_NAME_LEN {
        return Err(DeviceNameError::TooLong);
    }
    if !name
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
    {
        return Err(DeviceNameError::InvalidCharacter);
    }
    Ok(())
}

impl fmt::Display for DeviceName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for DeviceName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&self.0, f)
    }
}

impl AsRef<str> for DeviceName {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

impl<'de> Deserialize<'de> for DeviceName {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        DeviceName::from_admin(&s).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wire_names() {
        assert!(DeviceName::from_wire("SEP001122334455").is_ok());
        assert!(DeviceName::from_wire("SEP00112233AABB").is_ok());
        assert!(DeviceName::from_wire("CSF123").is_ok());
        assert!(DeviceName::from_wire("BOTJSMITH").is_ok());
        assert_eq!(
            DeviceName::from_wire("SEP00112233445G"),
            Err(DeviceNameError::BadSepName)
        );
        assert_eq!(DeviceName::from_wire(""), Err(DeviceNameError::Empty));
        assert_eq!(
            DeviceName::from_wire("CSF1234567890123"),
            Err(DeviceNameError::TooLong)
        );
        assert_eq!(
            DeviceName::from_wire("CSF 1"),
            Err(DeviceNameError::InvalidCharacter)
        );
    }

    #[test]
    fn admin_names_upper_case_sep() {
        assert_eq!(
            DeviceName::from_admin("sep00112233aabb").unwrap().as_str(),
            "SEP00112233AABB"
        );
        assert_eq!(
            DeviceName::from_admin("CSFjsmith").unwrap().as_str(),
            "CSFjsmith"
        );
        assert!(DeviceName::from_admin("SEP0011").is_err());
    }
}
