//! The key a phone is asked to generate: algorithm and size or curve.
//!
//! One type shared by the protocol mapping, the CA checks, the store and the API, so the
//! textual form (`rsa-2048`, `ec-p256`) is defined in exactly one place.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// NIST curves a phone can be asked for. Their values on the wire are capf-proto's business
/// (`CurveId`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Curve {
    P256,
    P384,
    P521,
}

/// Algorithm and size of a key. RSA sizes are limited to what an administrator may schedule.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum KeySpec {
    Rsa(u16),
    Ec(Curve),
}

/// RSA modulus sizes an operation may ask for.
pub const RSA_SIZES: [u16; 4] = [1024, 2048, 3072, 4096];

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown key type {0:?}: expected one of rsa-1024, rsa-2048, rsa-3072, rsa-4096, ec-p256, ec-p384, ec-p521")]
pub struct KeySpecParseError(pub String);

impl KeySpec {
    pub fn as_str(self) -> &'static str {
        match self {
            KeySpec::Rsa(1024) => "rsa-1024",
            KeySpec::Rsa(2048) => "rsa-2048",
            KeySpec::Rsa(3072) => "rsa-3072",
            KeySpec::Rsa(4096) => "rsa-4096",
            // Only reachable through a hand-built value; keep Display total anyway.
            KeySpec::Rsa(_) => "rsa-other",
            KeySpec::Ec(Curve::P256) => "ec-p256",
            KeySpec::Ec(Curve::P384) => "ec-p384",
            KeySpec::Ec(Curve::P521) => "ec-p521",
        }
    }

    pub fn is_rsa(self) -> bool {
        matches!(self, KeySpec::Rsa(_))
    }
}

impl fmt::Display for KeySpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            KeySpec::Rsa(bits) if !RSA_SIZES.contains(bits) => write!(f, "rsa-{bits}"),
            other => f.write_str(other.as_str()),
        }
    }
}

impl FromStr for KeySpec {
    type Err = KeySpecParseError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "rsa-1024" => Ok(KeySpec::Rsa(1024)),
            "rsa-2048" => Ok(KeySpec::Rsa(2048)),
            "rsa-3072" => Ok(KeySpec::Rsa(3072)),
            "rsa-4096" => Ok(KeySpec::Rsa(4096)),
            "ec-p256" => Ok(KeySpec::Ec(Curve::P256)),
            "ec-p384" => Ok(KeySpec::Ec(Curve::P384)),
            "ec-p521" => Ok(KeySpec::Ec(Curve::P521)),
            other => Err(KeySpecParseError(other.to_string())),
        }
    }
}

impl Serialize for KeySpec {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for KeySpec {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_form_round_trips() {
        for s in [
            "rsa-1024", "rsa-2048", "rsa-3072", "rsa-4096", "ec-p256", "ec-p384", "ec-p521",
        ] {
            assert_eq!(s.parse::<KeySpec>().unwrap().to_string(), s);
        }
        assert!("rsa-512".parse::<KeySpec>().is_err());
        assert!("EC-P256".parse::<KeySpec>().is_err());
    }
}
