//! Key generation (spec 4.2): KEY_GENERATE_REQUEST and KEY_GENERATE_RESPONSE, and the one
//! mapping between a [`KeySpec`] and the elements that ask for it.

use capf_model::keyspec::{Curve, KeySpec};

use super::codec::{typed_message, Byte, Bytes, U16};
use super::Extra;
use crate::{CurveId, KeyType, Reason, Tag, PROTOCOL_VERSION};

// Receiver sanity limit of the PUBLIC_KEY value (spec 1.5).
pub(super) const MAX_PUBLIC_KEY: usize = 2 * 1024;

typed_message! {
    /// KEY_GENERATE_REQUEST (3), server to phone.
    #[derive(Clone, Debug, Default, PartialEq, Eq)]
    pub struct KeyGenerateRequest {
        key_size: u16 = Tag::KeySize => U16,
        key_type: KeyType = Tag::KeyType => Byte,
        curve: CurveId = Tag::Curve => Byte,
    }
}

impl KeyGenerateRequest {
    /// The request for `key` to a client that announced `version`: KEY_SIZE + KEY_TYPE=0 for
    /// RSA, KEY_TYPE=1 + CURVE for EC. A client older than VERSION 3 gets KEY_SIZE alone, as
    /// CUCM sent Jabber, and is never asked for EC: `None` (spec 4.2).
    pub fn for_key(key: KeySpec, version: u8) -> Option<KeyGenerateRequest> {
        let current = version >= PROTOCOL_VERSION;
        match key {
            KeySpec::Rsa(bits) => Some(KeyGenerateRequest {
                key_size: Some(bits),
                key_type: current.then_some(KeyType::Rsa),
                curve: None,
                extra: Extra::default(),
            }),
            KeySpec::Ec(curve) if current => Some(KeyGenerateRequest {
                key_size: None,
                key_type: Some(KeyType::Ec),
                curve: Some(CurveId::from(curve)),
                extra: Extra::default(),
            }),
            KeySpec::Ec(_) => None,
        }
    }

    /// The key asked for, if the elements name one unambiguously: the inverse of
    /// [`KeyGenerateRequest::for_key`]. A KEY_SIZE without KEY_TYPE counts as RSA.
    pub fn key_spec(&self) -> Option<KeySpec> {
        match (self.key_type, self.key_size, self.curve) {
            (Some(KeyType::Ec), None, Some(curve)) => curve.curve().map(KeySpec::Ec),
            (None | Some(KeyType::Rsa), Some(bits), None) => Some(KeySpec::Rsa(bits)),
            _ => None,
        }
    }
}

impl From<Curve> for CurveId {
    fn from(curve: Curve) -> CurveId {
        match curve {
            Curve::P256 => CurveId::P256,
            Curve::P384 => CurveId::P384,
            Curve::P521 => CurveId::P521,
        }
    }
}

impl CurveId {
    /// The curve this value names, if any.
    pub fn curve(self) -> Option<Curve> {
        match self {
            CurveId::P256 => Some(Curve::P256),
            CurveId::P384 => Some(Curve::P384),
            CurveId::P521 => Some(Curve::P521),
            CurveId::Unknown(_) => None,
        }
    }
}

typed_message! {
    /// KEY_GENERATE_RESPONSE (4), phone to server: PUBLIC_KEY on success, REASON on failure.
    #[derive(Clone, Debug, Default, PartialEq, Eq)]
    pub struct KeyGenerateResponse {
        /// DER SubjectPublicKeyInfo, unparsed.
        public_key: Vec<u8> = Tag::PublicKey => Bytes<MAX_PUBLIC_KEY>,
        reason: Reason = Tag::Reason => Byte,
    }
}
