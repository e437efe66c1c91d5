//! What follows authentication: issuing the LSC, recording what the phone reports (stored,
//! fetched, deleted), and how the session ended.

use std::sync::Arc;

use chrono::{DateTime, Utc};
use tracing::{info, warn};

use super::{Claim, IssuedRecord, Service, SessionContext};
use crate::certinfo;
use capf_model::device::DeviceName;
use capf_model::operation::{FailureCause, OperationKind};
use capf_pki::ca::pubkey::check_public_key;
use capf_proto::session::{Authorized, IssueFailure, Issued, Outcome, RecordFailure};
use capf_proto::CertType;
use capf_store::{Attempt, ClaimLost, NewCertificate, StoreError};

impl Service {
    /// Checks the phone's key and issues its LSC, recording it as awaiting confirmation.
    pub(super) async fn issue(
        &self,
        ctx: &mut SessionContext,
        op: &mut Authorized<Claim>,
        public_key: Vec<u8>,
    ) -> Result<Issued<IssuedRecord>, IssueFailure> {
        let key = op.plan().key;
        let claim = op.claim_mut();
        claim.key_received = true;
        let device = claim.device.clone();
        let started = std::time::Instant::now();
        let issuer = Arc::clone(&self.issuer);
        let days = ctx.live.lsc_validity_days;
        let now = self.clock.now();
        let name = device.as_str().to_string();
        let result = self
            .crypto
            .run(move || {
                check_public_key(&public_key, key).map_err(|e| {
                    warn!(error = %e, "phone key refused");
                    IssueFailure::WrongKey
                })?;
                if issuer.is_own_key(&public_key) {
                    warn!("phone key refused: it is a key capf itself uses");
                    return Err(IssueFailure::WrongKey);
                }
                issuer
                    .issue_lsc(&name, &public_key, days, now)
                    .map_err(|e| {
                        warn!(error = %e, "issuing failed");
                        IssueFailure::Internal
                    })
            })
            .await
            .ok_or(IssueFailure::Internal)??;
        let record = NewCertificate {
            serial_hex: result.serial_hex.clone(),
            subject: result.subject.clone(),
            issuer: result.issuer.clone(),
            not_before: result.not_before,
            not_after: result.not_after,
            fingerprint_sha256: result.fingerprint_sha256.clone(),
            pem: result.pem.clone(),
        };
        let op_id = claim.operation.id;
        let claimant = self.claimant(ctx);
        let lease = self.settings.claim_lease;
        let recorded = self
            .store
            .record_issued(op_id, &claimant, record, self.clock.now(), lease)
            .await;
        match recorded {
            Ok(cert_id) => {
                self.metrics.issued(started.elapsed());
                info!(device = %device, serial = %result.serial_hex, "certificate issued");
                Ok(Issued {
                    der: result.der,
                    record: IssuedRecord(cert_id),
                })
            }
            Err(StoreError::ClaimLost(why)) => {
                // Signed but never recorded nor sent: the certificate is discarded here.
                self.claim_lost(ctx, claim, "certificate not issued", &why)
                    .await;
                Err(IssueFailure::ClaimLost)
            }
            Err(e) => {
                self.metrics.database_error();
                warn!(error = %e, "could not record the issued certificate");
                Err(IssueFailure::Internal)
            }
        }
    }

    pub(super) async fn record_store(
        &self,
        ctx: &mut SessionContext,
        op: &mut Authorized<Claim>,
        issued: &IssuedRecord,
        stored: bool,
    ) -> Result<(), RecordFailure> {
        let claim = op.claim_mut();
        let (op_id, key) = (claim.operation.id, claim.operation.key);
        let now = self.clock.now();
        if !stored {
            let audited = self
                .store
                .audit(
                    Some(&claim.device),
                    Some(op_id),
                    "certificate_store_failed",
                    Some(&ctx.source()),
                    "the phone reported it could not store the certificate",
                    now,
                )
                .await;
            return self.log_store_result(audited);
        }
        let claimant = self.claimant(ctx);
        // The session's attempt is written with the confirmation: one transaction fewer on
        // the path every enrollment takes. `finish` knows it is written when the outcome is
        // `Installed`, which this write succeeding is the only way to reach.
        let attempt = installed_attempt(ctx, &claim.device, op_id, now);
        let confirmed = self
            .store
            .confirm_install_with_attempt(op_id, &claimant, issued.0, now, attempt)
            .await;
        match confirmed {
            Ok(()) => {
                self.metrics.enrolled(&key.to_string());
                Ok(())
            }
            Err(StoreError::ClaimLost(why)) => {
                self.claim_lost(ctx, claim, "installation not confirmed", &why)
                    .await;
                Err(RecordFailure::ClaimLost)
            }
            Err(e) => self.log_store_result(Err(e)),
        }
    }

    pub(super) async fn record_fetch(
        &self,
        ctx: &mut SessionContext,
        op: &mut Authorized<Claim>,
        certificate: Option<(CertType, Vec<u8>)>,
    ) -> Result<(), RecordFailure> {
        let cert = match certificate {
            None => None,
            Some((_, der)) => match certinfo::describe(&der) {
                Ok(c) => Some(c),
                Err(e) => {
                    warn!(error = %e, "phone returned an unreadable certificate");
                    return Err(RecordFailure::UnreadableCertificate);
                }
            },
        };
        let claim = op.claim_mut();
        let claimant = self.claimant(ctx);
        let result = self
            .store
            .complete_fetch(claim.operation.id, &claimant, cert, self.clock.now())
            .await;
        self.record_completion(ctx, claim, "fetch not recorded", result)
            .await
    }

    pub(super) async fn record_delete(
        &self,
        ctx: &mut SessionContext,
        op: &mut Authorized<Claim>,
    ) -> Result<(), RecordFailure> {
        let claim = op.claim_mut();
        let claimant = self.claimant(ctx);
        let result = self
            .store
            .complete_delete(claim.operation.id, &claimant, self.clock.now())
            .await;
        self.record_completion(ctx, claim, "deletion not recorded", result)
            .await
    }

    /// The outcome of a fetch's or a delete's completing write: a lost claim ends the
    /// session like an install's (END_SESSION 7, audit `claim_lost`).
    async fn record_completion(
        &self,
        ctx: &mut SessionContext,
        claim: &mut Claim,
        what: &str,
        result: Result<(), StoreError>,
    ) -> Result<(), RecordFailure> {
        if let Err(StoreError::ClaimLost(why)) = &result {
            self.claim_lost(ctx, claim, what, why).await;
            return Err(RecordFailure::ClaimLost);
        }
        self.log_store_result(result)
    }

    /// Writes the attempt history and releases any claim this session holds.
    pub(super) async fn finish(
        &self,
        ctx: &SessionContext,
        op: Option<Authorized<Claim>>,
        outcome: Outcome,
    ) {
        if ctx.device.is_none() {
            return;
        }
        let operation_id = op.as_ref().map(|op| op.claim().operation.id);
        // A session whose claim was taken over leaves the operation to the new holder: no
        // failure noted on it, and nothing of ours left to release.
        if let Some(claim) = op.as_ref().map(Authorized::claim).filter(|c| !c.lost) {
            let op_id = claim.operation.id;
            if outcome != Outcome::Installed && claim.operation.kind == OperationKind::Install {
                self.account_failed_install(ctx, claim, outcome).await;
            }
            let claimant = self.claimant(ctx);
            self.live_claims().remove(&claimant);
            // These outcomes are reached only after the store ended the operation, which
            // cleared its claim: no release (a write transaction) needed.
            let ended = matches!(
                outcome,
                Outcome::Installed | Outcome::Fetched | Outcome::Deleted | Outcome::DeleteFailed
            );
            if !ended {
                if let Err(e) = self.store.release(op_id, &claimant).await {
                    warn!(error = %e, "could not release the operation; will retry");
                    self.unreleased_claims().push((op_id, claimant));
                }
            }
        }
        // An install's attempt was written with its confirmation (`record_store`).
        if outcome == Outcome::Installed {
            return;
        }
        let Some(attempt) = ctx.attempt(operation_id, outcome, self.clock.now()) else {
            return;
        };
        if let Err(e) = self.store.record_attempt(attempt).await {
            warn!(error = %e, "could not record the attempt");
        }
    }
}

/// The attempt record of an installing session, written with the confirmation.
fn installed_attempt(
    ctx: &SessionContext,
    device: &DeviceName,
    op_id: i64,
    now: DateTime<Utc>,
) -> Attempt {
    Attempt {
        device_name: device.clone(),
        operation_id: Some(op_id),
        session_id: ctx.session_id,
        source_addr: ctx.source(),
        started_at: ctx.started_at,
        ended_at: now,
        outcome: Outcome::Installed.as_str().to_string(),
        detail: Outcome::Installed.detail().to_string(),
    }
}

impl Service {
    /// The store refused a write because another session holds the operation's claim now
    /// (this node lost the database for longer than the lease, say): the session ends with
    /// END_SESSION 7 and the attempt record and audit trail say why.
    async fn claim_lost(
        &self,
        ctx: &mut SessionContext,
        claim: &mut Claim,
        what: &str,
        why: &ClaimLost,
    ) {
        claim.lost = true;
        self.live_claims().remove(&self.claimant(ctx));
        let detail = format!("claim lost: {what}: {why}");
        self.audit_claim_lost(ctx, claim.operation.id, &detail)
            .await;
        ctx.detail = Some(detail);
    }

    async fn audit_claim_lost(&self, ctx: &SessionContext, op_id: i64, detail: &str) {
        warn!(operation = op_id, "{detail}");
        let audited = self
            .store
            .audit(
                ctx.device.as_ref(),
                Some(op_id),
                "claim_lost",
                Some(&ctx.source()),
                detail,
                self.clock.now(),
            )
            .await;
        if let Err(e) = audited {
            warn!(error = %e, "could not record the lost claim");
        }
    }

    fn log_store_result(&self, result: Result<(), StoreError>) -> Result<(), RecordFailure> {
        result.map_err(|e| {
            self.metrics.database_error();
            warn!(error = %e, "could not record the outcome");
            RecordFailure::Unavailable
        })
    }

    /// An install session that asked for a key did not end with an installed certificate:
    /// note why on the operation, and fail it once key generation has failed as many times
    /// as allowed (CUCM's maximum key-generation attempts).
    async fn account_failed_install(&self, ctx: &SessionContext, claim: &Claim, outcome: Outcome) {
        let op_id = claim.operation.id;
        let attempts = claim.keygen_attempts;
        let keygen_failed = !claim.key_received || outcome == Outcome::WrongKey;
        let cause = match outcome {
            Outcome::KeyGenerationTimeout => FailureCause::KeyGenerationTimeout,
            Outcome::KeyGenerationFailed | Outcome::WrongKey => FailureCause::KeyGenerationFailed,
            _ => FailureCause::PhoneCommunicationFailure,
        };
        let now = self.clock.now();
        let claimant = self.claimant(ctx);
        let give_up = keygen_failed && attempts >= ctx.live.keygen_max_attempts;
        let result = if give_up {
            self.store
                .fail_operation(op_id, &claimant, cause, now)
                .await
        } else {
            self.store
                .note_attempt_failure(op_id, Some(&claimant), cause, now)
                .await
        };
        match result {
            Ok(()) if give_up => warn!(
                operation = op_id,
                attempts,
                cause = cause.as_str(),
                "key generation failed too many times: operation failed"
            ),
            Ok(()) => {}
            // Another session took the operation over (this node could not reach the
            // database for longer than the lease, say): its outcome is that session's.
            Err(StoreError::ClaimLost(why)) => {
                let detail = format!("claim lost: failure not recorded: {why}");
                self.audit_claim_lost(ctx, op_id, &detail).await;
            }
            Err(e) => warn!(error = %e, "could not record the failed attempt"),
        }
    }
}
