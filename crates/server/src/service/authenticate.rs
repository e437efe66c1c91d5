//! Checking what a phone presents: the device and its operation, the lockout admission, the
//! credentials of the operation's mode, and the claim of the operation.

use chrono::{DateTime, Utc};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use tracing::{info, warn};

use super::{Claim, Service, SessionContext};
use capf_model::operation::{AuthMode, CertState, FailureCause};
use capf_pki::auth::{
    self, AuthError, AuthPolicy, CertAuthRequest, CertKind, Precedence, SudiBlock, TrustAnchors,
    Verified,
};
use capf_proto::session::{AuthAttempt, AuthVerdict, Plan};
use capf_proto::AuthResponse;
use capf_store::{AuthAdmission, AuthTicket, Operation, StoreError};

/// Why a phone's credentials were refused: the cause the operation's status shows, and the
/// finer reason the audit trail keeps (never anything the phone submitted).
#[derive(Clone, Copy, Debug)]
struct CredentialFailure {
    cause: FailureCause,
    reason: &'static str,
}

impl CredentialFailure {
    fn new(cause: FailureCause, reason: &'static str) -> Self {
        CredentialFailure { cause, reason }
    }

    /// The cause as recorded in the `auth_failed` event: `invalid_lsc (bad SHA-1 signature)`.
    fn audit(&self) -> String {
        format!("{} ({})", self.cause.as_str(), self.reason)
    }
}

/// Verifies the certificate authentication an AUTH_RESPONSE carries for `device`, on the
/// connection of `session_id`: the leaf and any further certificates of CERTIFICATE,
/// SIGNED_DATA, SHA2_SIGNED_DATA and SUDI_DATA, as a [`CertAuthRequest`] for
/// [`auth::verify_certificate_auth`]. `None` when the response lacks the certificate or
/// either signature.
pub fn verify_auth_response(
    response: &AuthResponse,
    device: &str,
    session_id: u32,
    anchors: &TrustAnchors,
    policy: &AuthPolicy,
    now: DateTime<Utc>,
) -> Option<Result<Verified, AuthError>> {
    let (Some(cert), Some(signed), Some(sha2)) = (
        response.certificate.as_ref(),
        response.signed_data.as_deref(),
        response.sha2_signed_data.as_ref(),
    ) else {
        return None;
    };
    let extra: Vec<Vec<u8>> = cert.entries.iter().skip(1).map(|e| e.der.clone()).collect();
    let request = CertAuthRequest {
        device_name: device,
        certificate: &cert.first().der,
        extra_chain: &extra,
        signed_data: signed,
        sha2_hash_id: u8::from(sha2.hash_id),
        sha2_signature: &sha2.signature,
        sudi: response.sudi.as_ref().map(|s| SudiBlock {
            certificate: &s.certificate,
            sha1_signature: &s.sha1_signature,
            sha2_hash_id: u8::from(s.sha2_hash_id),
            sha2_signature: &s.sha2_signature,
        }),
        session_id,
    };
    Some(auth::verify_certificate_auth(
        &request, anchors, policy, now,
    ))
}

impl Service {
    /// Looks the device up, applies the lockout, checks the credentials of the operation's
    /// mode and claims the operation.
    pub(super) async fn authenticate(
        &self,
        ctx: &mut SessionContext,
        attempt: &AuthAttempt,
    ) -> AuthVerdict<Claim> {
        match self.try_authenticate(ctx, attempt).await {
            Ok(verdict) => verdict,
            Err(e) => {
                self.metrics.database_error();
                warn!(error = %e, "database error during authentication");
                AuthVerdict::Unavailable
            }
        }
    }

    async fn try_authenticate(
        &self,
        ctx: &mut SessionContext,
        attempt: &AuthAttempt,
    ) -> Result<AuthVerdict<Claim>, StoreError> {
        let now = self.clock.now();
        let name = &attempt.device_name;
        let Some((device, pending)) = self.store.device_and_pending_operation(name, now).await?
        else {
            info!(device = %name, "unknown device");
            return Ok(AuthVerdict::UnknownDevice);
        };
        ctx.device = Some(device.name.clone());
        if device.locked_until.is_some_and(|until| until > now) {
            // The secret is not even looked at while locked.
            self.store
                .record_locked_attempt(name, &ctx.source(), now)
                .await?;
            ctx.detail = Some("device locked".into());
            warn!(device = %name, "device locked: attempt refused");
            return Ok(AuthVerdict::Refused);
        }
        let Some(op) = pending else {
            return Ok(AuthVerdict::NoOperation);
        };
        // Every check of a secret or certificate is admitted, and counted, by the store first:
        // the lock holds against guesses sent in parallel, from one node or several.
        let ticket = if op.auth_mode == AuthMode::Null {
            None
        } else {
            match self
                .store
                .admit_auth_attempt(name, &ctx.source(), now, ctx.live.lockout())
                .await?
            {
                AuthAdmission::Admitted(ticket) => Some(ticket),
                AuthAdmission::Locked => {
                    ctx.detail = Some("device locked".into());
                    warn!(device = %name, "device locked: attempt refused");
                    return Ok(AuthVerdict::Refused);
                }
            }
        };
        if let Err(failure) = self
            .check_credentials(ctx, &op, attempt, device.require_sudi)
            .await?
        {
            let cause = failure.cause;
            let ticket = ticket.unwrap_or(AuthTicket {
                failures: 0,
                locks_until: None,
            });
            self.store
                .record_auth_failure(name, &ticket, &failure.audit(), &ctx.source(), now)
                .await?;
            // The status reads "<op> Failed: <cause>" while the operation stays pending.
            self.store
                .note_attempt_failure(op.id, None, cause, now)
                .await?;
            ctx.detail = Some(cause.as_str().to_string());
            if ticket.locks_until.is_some() {
                self.metrics.locked_out();
            }
            warn!(device = %name, cause = cause.as_str(), failures = ticket.failures,
                  locked = ticket.locks_until.is_some(), "authentication failed");
            return Ok(AuthVerdict::Refused);
        }
        if ticket.is_some() || device.failed_auth_count > 0 {
            self.store
                .record_auth_success(name, ticket.as_ref(), now)
                .await?;
        }
        self.retry_releases().await;
        // Marked live before claiming, so no other session of ours takes it over meanwhile.
        let claimant = self.claimant(ctx);
        self.live_claims().insert(claimant.clone());
        // An install's key-generation attempt is counted with the claim, before the phone is
        // asked, so a node dying mid-wait still counts it.
        let claimed = self.claim_for(&op, &claimant, now).await;
        if !matches!(claimed, Ok(Some(_))) {
            self.live_claims().remove(&claimant);
        }
        let Some(attempts) = claimed? else {
            ctx.detail = Some("operation held by another session".into());
            warn!(device = %name, operation = op.id, "operation claimed by another session");
            return Ok(AuthVerdict::Refused);
        };
        let plan = Plan {
            kind: op.kind,
            key: op.key,
        };
        // From here on the session holds the claim, and `finish` releases it.
        Ok(AuthVerdict::Proceed {
            plan,
            claim: Claim {
                device: device.name,
                operation: op,
                keygen_attempts: attempts,
                key_received: false,
                lost: false,
            },
        })
    }

    /// `Ok(Err(failure))` when the phone's credentials are wrong; `Err` when the store failed.
    async fn check_credentials(
        &self,
        ctx: &SessionContext,
        op: &Operation,
        attempt: &AuthAttempt,
        require_sudi: bool,
    ) -> Result<Result<(), CredentialFailure>, StoreError> {
        let precedence = match op.auth_mode {
            AuthMode::Null => return Ok(Ok(())),
            AuthMode::String => {
                let expected = op.auth_string.as_ref().map(|s| s.0.as_bytes());
                let given = attempt.response.password.as_deref().map(str::as_bytes);
                return Ok(match (expected, given) {
                    (Some(expected), Some(given)) if constant_time_eq(expected, given) => Ok(()),
                    _ => Err(CredentialFailure::new(
                        FailureCause::InvalidAuthString,
                        "wrong or missing string",
                    )),
                });
            }
            AuthMode::Lsc => Precedence::Lsc,
            AuthMode::Mic => Precedence::Mic,
        };
        let name = &attempt.device_name;
        let device_has_lsc = self.store.current_certificate(name).await?.is_some();
        let policy = AuthPolicy {
            precedence,
            require_sudi,
            mic_expiry_allowance: ctx.live.mic_expiry_allowance(),
            device_has_lsc,
        };
        let anchors = self.trust_anchors();
        let response = attempt.response.clone();
        let device = name.as_str().to_string();
        let session_id = ctx.session_id;
        let now = self.clock.now();
        let verified = self
            .crypto
            .run(move || {
                verify_auth_response(&response, &device, session_id, &anchors, &policy, now)
            })
            .await;
        let verified = match verified {
            Some(Some(Ok(v))) => v,
            Some(Some(Err(e))) => {
                warn!(cause = e.cause(), "certificate authentication failed");
                let cause = match e.cert_kind() {
                    Some(CertKind::Lsc) => FailureCause::InvalidLsc,
                    Some(CertKind::Mic) => FailureCause::InvalidMic,
                    None => FailureCause::InvalidCredentials,
                };
                return Ok(Err(CredentialFailure::new(cause, e.cause())));
            }
            // No certificate or signatures at all.
            Some(None) => {
                return Ok(Err(CredentialFailure::new(
                    FailureCause::InvalidCredentials,
                    "no certificate or signatures",
                )))
            }
            None => {
                return Ok(Err(CredentialFailure::new(
                    FailureCause::InvalidCredentials,
                    "verification did not complete",
                )))
            }
        };
        if verified.kind == CertKind::Lsc {
            // A valid LSC is not enough: it must be one capf issued to this device and did
            // not delete.
            // (A troubleshoot may have recorded the same certificate again as fetched, so
            // look at every record, not just one.)
            let on_record = self.store.certificates(name).await?.iter().any(|c| {
                c.fingerprint_sha256 == verified.fingerprint_sha256
                    && matches!(
                        c.state,
                        CertState::Installed | CertState::AwaitingConfirmation
                    )
            });
            if !on_record {
                warn!(serial = %verified.serial_hex, "LSC is not on record for this device");
                return Ok(Err(CredentialFailure::new(
                    FailureCause::InvalidLsc,
                    "LSC not on record for this device",
                )));
            }
        }
        info!(
            kind = verified.kind.as_str(),
            sudi = verified.sudi_verified,
            "certificate authentication succeeded"
        );
        Ok(Ok(()))
    }
}

/// Compares secrets without revealing where they differ (nor, by hashing first, their
/// lengths).
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    let a = Sha256::digest(a);
    let b = Sha256::digest(b);
    a.ct_eq(&b).into()
}
