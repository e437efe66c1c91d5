//! The domain's named values: what an operation is, how a phone authenticates, where an
//! operation and a certificate stand. Each is stored and sent as a short lower-case text
//! (`install`, `timed_out`, ...), the same on both database engines and in the API.

use std::fmt;

use serde::Serialize;

/// A text that names none of an enum's values.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("unknown {kind} {value:?}")]
pub struct ParseError {
    /// The enum's name, e.g. `OperationKind`.
    pub kind: &'static str,
    /// The text that was read.
    pub value: String,
}

macro_rules! text_enum {
    ($(#[$meta:meta])* $name:ident { $($(#[$vmeta:meta])* $variant:ident => $text:literal),+ $(,)? }) => {
        $(#[$meta])*
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, serde::Deserialize)]
        pub enum $name { $($(#[$vmeta])* #[serde(rename = $text)] $variant),+ }

        impl $name {
            pub const ALL: &'static [$name] = &[$($name::$variant),+];

            pub fn as_str(self) -> &'static str {
                match self { $($name::$variant => $text),+ }
            }
        }

        impl std::str::FromStr for $name {
            type Err = ParseError;
            fn from_str(s: &str) -> Result<Self, ParseError> {
                match s {
                    $($text => Ok($name::$variant),)+
                    other => Err(ParseError { kind: stringify!($name), value: other.to_owned() }),
                }
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }
    };
}

text_enum!(
    /// What the administrator asked the phone to do.
    OperationKind { Install => "install", Delete => "delete", Troubleshoot => "troubleshoot" }
);

text_enum!(
    /// CUCM's "Authentication Mode".
    AuthMode { String => "string", Null => "null", Lsc => "lsc", Mic => "mic" }
);

text_enum!(
    /// Life cycle of an operation. Only `Pending` is not final.
    OperationStatus {
        Pending => "pending",
        Success => "success",
        Failed => "failed",
        TimedOut => "timed_out",
        Cancelled => "cancelled",
        Superseded => "superseded",
    }
);

text_enum!(
    /// Why an operation (or one attempt at it) failed, in CUCM's vocabulary.
    FailureCause {
        InvalidLsc => "invalid_lsc",
        InvalidAuthString => "invalid_auth_string",
        InvalidMic => "invalid_mic",
        InvalidCredentials => "invalid_credentials",
        PhoneCommunicationFailure => "phone_communication_failure",
        KeyGenerationFailed => "key_generation_failed",
        KeyGenerationTimeout => "key_generation_timeout",
        UserInitiatedRequestLate => "user_initiated_request_late",
    }
);

text_enum!(
    /// What an admin API token may do.
    TokenScope { Admin => "admin", ReadOnly => "read_only" }
);

text_enum!(
    /// Where a certificate record stands.
    CertState {
        /// Issued and sent; the phone has not confirmed it stored it.
        AwaitingConfirmation => "awaiting_confirmation",
        /// The phone confirmed it: this is the device's current LSC.
        Installed => "installed",
        /// Was installed, replaced by a newer one.
        Superseded => "superseded",
        /// Removed by a delete operation.
        Deleted => "deleted",
        /// Issued but never confirmed; a later issuance for the same operation replaced it.
        Abandoned => "abandoned",
        /// Returned by the phone during troubleshoot (not issued by us, or not trusted).
        Fetched => "fetched",
    }
);
