//! CUCM's "Certificate Operation Status" vocabulary, so a voice engineer reads capf's
//! listings without a manual: "None", "Operation Pending", "Upgrade Success",
//! "Delete Failed: Invalid Authentication String", ...
//!
//! Like CUCM's, the text reports the latest result: an operation that is still pending but
//! whose last attempt failed (a wrong string, a key-generation timeout) reads
//! "Upgrade Failed: <cause>" while the phone may still try again; `code` says `pending`.

use serde::Serialize;

use crate::operation::{FailureCause, OperationKind, OperationStatus};

/// The facts of an operation its status is worded from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StatusOf {
    pub kind: OperationKind,
    pub status: OperationStatus,
    /// The cause of the latest failure, if any (also on a pending operation).
    pub cause: Option<FailureCause>,
}

/// The status of a device's latest operation, for people (`text`) and programs (`code`,
/// `cause`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct StatusView {
    /// `none`, `pending`, `success`, `failed`, `timed_out` or `cancelled`.
    pub code: &'static str,
    /// CUCM's wording.
    pub text: String,
    /// Machine-readable cause of the failure shown in `text`, if any.
    pub cause: Option<&'static str>,
}

/// CUCM's name of an operation in status texts.
pub(crate) fn operation_verb(kind: OperationKind) -> &'static str {
    match kind {
        OperationKind::Install => "Upgrade",
        OperationKind::Delete => "Delete",
        OperationKind::Troubleshoot => "Troubleshoot",
    }
}

/// CUCM's wording of a failure cause.
pub(crate) fn cause_text(cause: FailureCause) -> &'static str {
    match cause {
        FailureCause::InvalidLsc => "Invalid LSC",
        FailureCause::InvalidAuthString => "Invalid Authentication String",
        FailureCause::InvalidMic => "Invalid MIC",
        FailureCause::InvalidCredentials => "Invalid Credentials",
        FailureCause::PhoneCommunicationFailure => "Phone Communication Failure",
        FailureCause::KeyGenerationFailed => "Key Generation Failed",
        FailureCause::KeyGenerationTimeout => "Key Generation Timeout",
        FailureCause::UserInitiatedRequestLate => "User Initiated Request Late",
    }
}

/// The status shown for a device whose latest operation is `op`.
pub fn describe(op: Option<StatusOf>) -> StatusView {
    let Some(op) = op else {
        return none("none");
    };
    let verb = operation_verb(op.kind);
    let failed = |code, cause: FailureCause| StatusView {
        code,
        text: format!("{verb} Failed: {}", cause_text(cause)),
        cause: Some(cause.as_str()),
    };
    match op.status {
        OperationStatus::Pending => match op.cause {
            Some(cause) => failed("pending", cause),
            None => StatusView {
                code: "pending",
                text: "Operation Pending".into(),
                cause: None,
            },
        },
        OperationStatus::Success => StatusView {
            code: "success",
            text: format!("{verb} Success"),
            cause: None,
        },
        OperationStatus::Failed => failed(
            "failed",
            op.cause.unwrap_or(FailureCause::InvalidCredentials),
        ),
        OperationStatus::TimedOut => failed("timed_out", FailureCause::UserInitiatedRequestLate),
        // Cancelling is CUCM's "No Pending Operation": the status reads None again.
        OperationStatus::Cancelled => none("cancelled"),
        // Never a device's latest operation (the one that superseded it is), but total.
        OperationStatus::Superseded => none("superseded"),
    }
}

fn none(code: &'static str) -> StatusView {
    StatusView {
        code,
        text: "None".into(),
        cause: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn op(kind: OperationKind, status: OperationStatus, cause: Option<FailureCause>) -> StatusOf {
        StatusOf {
            kind,
            status,
            cause,
        }
    }

    #[test]
    fn cucm_wording() {
        use FailureCause::*;
        use OperationKind::*;
        use OperationStatus::*;
        assert_eq!(describe(None).text, "None");
        let cases = [
            (Install, Pending, None, "pending", "Operation Pending"),
            (Install, Success, None, "success", "Upgrade Success"),
            (Delete, Success, None, "success", "Delete Success"),
            (
                Troubleshoot,
                Success,
                None,
                "success",
                "Troubleshoot Success",
            ),
            (
                Install,
                Pending,
                Some(InvalidAuthString),
                "pending",
                "Upgrade Failed: Invalid Authentication String",
            ),
            (
                Install,
                Failed,
                Some(KeyGenerationTimeout),
                "failed",
                "Upgrade Failed: Key Generation Timeout",
            ),
            (
                Delete,
                TimedOut,
                Some(UserInitiatedRequestLate),
                "timed_out",
                "Delete Failed: User Initiated Request Late",
            ),
            (Troubleshoot, Cancelled, None, "cancelled", "None"),
        ];
        for (kind, status, cause, code, text) in cases {
            let view = describe(Some(op(kind, status, cause)));
            assert_eq!((view.code, view.text.as_str()), (code, text));
        }
        for cause in FailureCause::ALL {
            let view = describe(Some(op(Install, Failed, Some(*cause))));
            assert_eq!(view.cause, Some(cause.as_str()));
            assert!(view.text.starts_with("Upgrade Failed: "));
        }
    }
}
