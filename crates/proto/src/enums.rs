//! The numbers of the protocol as typed enums (spec 2, 3.1-3.4).
//!
//! Every enum is open: a value the protocol does not name decodes to `Unknown(n)` and encodes
//! back to `n`, so a frame with values nobody has seen still re-encodes byte for byte. Build
//! values with `From<u8>` (or a named variant), never `Unknown` with a named value:
//! `Unknown(1)` and the variant for 1 encode alike but do not compare equal.

use std::fmt;

/// Declares an open wire enum: one variant per named value plus `Unknown(u8)`, the two
/// conversions with `u8`, and the spec's name of each value for logs.
macro_rules! wire_enum {
    (
        $(#[$meta:meta])*
        pub enum $name:ident {
            $( $(#[$vmeta:meta])* $variant:ident = $value:literal => $text:literal, )*
        }
    ) => {
        $(#[$meta])*
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
        pub enum $name {
            $( $(#[$vmeta])* $variant, )*
            /// A value the protocol does not name, kept as received.
            Unknown(u8),
        }

        impl From<u8> for $name {
            fn from(value: u8) -> Self {
                match value {
                    $( $value => $name::$variant, )*
                    other => $name::Unknown(other),
                }
            }
        }

        impl From<$name> for u8 {
            fn from(value: $name) -> u8 {
                match value {
                    $( $name::$variant => $value, )*
                    $name::Unknown(other) => other,
                }
            }
        }

        impl $name {
            /// The spec's name of the value, "UNKNOWN" for the others.
            pub fn name(self) -> &'static str {
                match self {
                    $( $name::$variant => $text, )*
                    $name::Unknown(_) => "UNKNOWN",
                }
            }

            /// Whether the spec names the value (even if its meaning is unknown).
            pub fn is_known(self) -> bool {
                !matches!(self, $name::Unknown(_))
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.name())
            }
        }
    };
}

wire_enum! {
    /// Command numbers (spec 2). 0 and values above 23 are undefined.
    pub enum Command {
        AuthRequest = 1 => "AUTH_REQUEST",
        AuthResponse = 2 => "AUTH_RESPONSE",
        KeyGenerateRequest = 3 => "KEY_GENERATE_REQUEST",
        KeyGenerateResponse = 4 => "KEY_GENERATE_RESPONSE",
        EncryptResponse = 5 => "ENCRYPT_RESPONSE",
        EncryptRequest = 6 => "ENCRYPT_REQUEST",
        DecryptRequest = 7 => "DECRYPT_REQUEST",
        DecryptResponse = 8 => "DECRYPT_RESPONSE",
        StoreCertificateRequest = 9 => "STORE_CERTIFICATE_REQUEST",
        StoreCertificateResponse = 10 => "STORE_CERTIFICATE_RESPONSE",
        FetchCertificateRequest = 11 => "FETCH_CERTIFICATE_REQUEST",
        FetchCertificateResponse = 12 => "FETCH_CERTIFICATE_RESPONSE",
        DeleteCertificateRequest = 13 => "DELETE_CERTIFICATE_REQUEST",
        DeleteCertificateResponse = 14 => "DELETE_CERTIFICATE_RESPONSE",
        EndSession = 15 => "END_SESSION",
        RetryLater = 16 => "RETRY_LATER",
        RequestInProgress = 17 => "REQUEST_IN_PROGRESS",
        StatusRequest = 18 => "STATUS_REQUEST",
        StatusResponse = 19 => "STATUS_RESPONSE",
        AbortRequest = 20 => "ABORT_REQUEST",
        AbortResponse = 21 => "ABORT_RESPONSE",
        SignCertificateRequest = 22 => "SIGN_CERTIFICATE_REQUEST",
        SignCertificateResponse = 23 => "SIGN_CERTIFICATE_RESPONSE",
    }
}

impl Command {
    /// Commands only a server sends; the phone simulator and the session fuzz target use it
    /// to reject nonsense.
    pub fn is_sent_by_server(self) -> bool {
        matches!(
            self,
            Command::AuthRequest
                | Command::KeyGenerateRequest
                | Command::StoreCertificateRequest
                | Command::FetchCertificateRequest
                | Command::DeleteCertificateRequest
                | Command::EndSession
        )
    }
}

wire_enum! {
    /// Element tags (spec 3.1). Tags 0, 14, 15 and above 20 are "unknown": skipped and kept
    /// verbatim by the decoder, and allowed to repeat.
    pub enum Tag {
        Reason = 1 => "REASON",
        ReasonInfo = 2 => "REASON_INFO",
        CertificateType = 3 => "CERTIFICATE_TYPE",
        Certificate = 4 => "CERTIFICATE",
        CertificateId = 5 => "CERTIFICATE_ID",
        SignedData = 6 => "SIGNED_DATA",
        Version = 7 => "VERSION",
        AuthType = 8 => "AUTH_TYPE",
        PublicKey = 9 => "PUBLIC_KEY",
        KeySize = 10 => "KEY_SIZE",
        Password = 11 => "PASSWORD",
        RetryDelay = 12 => "RETRY_DELAY",
        DeviceName = 13 => "DEVICE_NAME",
        SudiData = 16 => "SUDI_DATA",
        KeyType = 17 => "KEY_TYPE",
        Curve = 18 => "CURVE",
        DigestType = 19 => "DIGEST_TYPE",
        Sha2SignedData = 20 => "SHA2_SIGNED_DATA",
    }
}

wire_enum! {
    /// Reason codes of the REASON element (spec 3.2).
    pub enum Reason {
        /// END_SESSION: nothing to do, and after every fetch.
        NoAction = 0 => "NO_ACTION",
        /// Success: stored, returned, deleted; END_SESSION after an install or a delete.
        UpdateCertificate = 1 => "UPDATE_CERTIFICATE",
        /// Failure, whatever the cause.
        InvalidElement = 7 => "INVALID_ELEMENT",
        /// END_SESSION: the device name is not configured.
        UnknownDevice = 9 => "UNKNOWN_DEVICE",
    }
}

wire_enum! {
    /// Values of the AUTH_TYPE element (spec 3.3). capf always sends `None`, like the
    /// reference server: the phone learns its mode from its configuration file.
    pub enum AuthType {
        None = 0 => "NONE",
        Password = 1 => "PASSWORD",
        NoPassword = 2 => "NO_PASSWORD",
        Lsc = 3 => "LSC",
        Mic = 4 => "MIC",
    }
}

wire_enum! {
    /// Certificate types (spec 3.4): the CERTIFICATE_TYPE element and the type byte of a
    /// certificate entry. Never trusted from a client (spec 3.5).
    pub enum CertType {
        Lsc = 1 => "LSC",
        Mic = 2 => "MIC",
    }
}

wire_enum! {
    /// Values of the KEY_TYPE element (spec 3.4).
    pub enum KeyType {
        Rsa = 0 => "RSA",
        Ec = 1 => "EC",
    }
}

wire_enum! {
    /// Values of the CURVE element (spec 3.4): the NIST curves.
    pub enum CurveId {
        P256 = 0 => "P-256",
        P384 = 1 => "P-384",
        P521 = 2 => "P-521",
    }
}

wire_enum! {
    /// Hash ids of SHA2_SIGNED_DATA and of the SUDI_DATA blocks (spec 3.4, 3.6, 3.7).
    pub enum HashId {
        Sha1 = 1 => "SHA-1",
        Sha256 = 2 => "SHA-256",
        Sha512 = 3 => "SHA-512",
    }
}

impl HashId {
    /// The ids a SHA-2 signature may carry.
    pub fn is_sha2(self) -> bool {
        matches!(self, HashId::Sha256 | HashId::Sha512)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_byte_converts_both_ways() {
        for value in 0..=u8::MAX {
            assert_eq!(u8::from(Command::from(value)), value);
            assert_eq!(u8::from(Tag::from(value)), value);
            assert_eq!(u8::from(Reason::from(value)), value);
            assert_eq!(u8::from(AuthType::from(value)), value);
            assert_eq!(u8::from(CertType::from(value)), value);
            assert_eq!(u8::from(KeyType::from(value)), value);
            assert_eq!(u8::from(CurveId::from(value)), value);
            assert_eq!(u8::from(HashId::from(value)), value);
        }
    }

    #[test]
    fn names_for_logs() {
        assert_eq!(Command::from(17).name(), "REQUEST_IN_PROGRESS");
        assert_eq!(Command::from(0).name(), "UNKNOWN");
        assert_eq!(Command::from(24).to_string(), "UNKNOWN");
        assert_eq!(Tag::from(20), Tag::Sha2SignedData);
        assert_eq!(Tag::Sha2SignedData.name(), "SHA2_SIGNED_DATA");
        for unknown in [0, 14, 15, 21, 255] {
            assert!(!Tag::from(unknown).is_known(), "{unknown}");
        }
        assert!(Tag::from(12).is_known());
        assert_eq!(Reason::from(9), Reason::UnknownDevice);
        assert_eq!(Reason::from(2), Reason::Unknown(2));
    }

    #[test]
    fn server_commands() {
        let sent: Vec<u8> = (0..=u8::MAX)
            .filter(|&c| Command::from(c).is_sent_by_server())
            .collect();
        assert_eq!(sent, vec![1, 3, 9, 11, 13, 15]);
    }
}
