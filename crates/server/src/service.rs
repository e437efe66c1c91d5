//! What a session's effects do: authenticate against the store, issue through the CA, record
//! outcomes. [`ServiceSession`] is capf-proto's [`SessionService`] for one connection; the
//! session state machine decides when each method runs, and hands the [`Authorized`]
//! operation to those that act on it.

use std::collections::HashSet;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard, RwLock};

use chrono::{DateTime, Utc};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use tracing::{info, warn};

use crate::certinfo;
use crate::config::{LiveConfig, LiveSettings, Settings};
use crate::crypto_pool::CryptoPool;
use crate::metrics::Metrics;
use capf_model::clock::Clock;
use capf_model::device::DeviceName;
use capf_model::operation::{AuthMode, CertState, FailureCause, OperationKind};
use capf_pki::auth::{
    self, AuthError, AuthPolicy, CertAuthRequest, CertKind, Precedence, SudiBlock, TrustAnchors,
    Verified,
};
use capf_pki::ca::lsc::Issuer;
use capf_pki::ca::pubkey::check_public_key;
use capf_proto::session::{
    AuthAttempt, AuthVerdict, Authorized, IssueFailure, Issued, Outcome, Plan, RecordFailure,
    SessionService,
};
use capf_proto::{AuthResponse, CertType};
use capf_store::{
    Attempt, AuthAdmission, AuthTicket, ClaimLost, NewCertificate, Operation, Store, StoreError,
    Timestamp,
};

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
/// Shared by every connection.
#[derive(Debug)]
pub struct Service {
    pub store: Arc<dyn Store>,
    pub issuer: Arc<Issuer>,
    /// Read at start only; what SIGHUP changes is in `live`.
    pub settings: Arc<Settings>,
    /// The settings SIGHUP reloads; each session takes them once, at its start.
    pub live: Arc<LiveConfig>,
    /// Anchors for certificate authentication: LSC issuer and manufacturer CAs. Replaced
    /// whole on SIGHUP; sessions keep the set they started with.
    pub anchors: RwLock<Arc<TrustAnchors>>,
    /// Claims of ended sessions that could not be released (the database was away): retried
    /// before the next claim and by the heartbeat, so a phone's retry is not refused for a
    /// whole lease by a session that no longer exists.
    unreleased: Mutex<Vec<(i64, String)>>,
    /// Claimants of this node's sessions that hold (or are about to hold) a claim. A claim of
    /// ours whose claimant is not here belongs to an ended session whose release has not
    /// reached the database yet, and may be taken over.
    live_claimants: Mutex<HashSet<String>>,
    /// Random per process: a node restarted under the same `node_id` must not renew (and so
    /// keep forever) the claims its previous run left behind.
    run: u32,
    /// Where signatures are verified and LSCs signed.
    crypto: CryptoPool,
    pub metrics: Arc<dyn Metrics>,
    /// Where "now" comes from: deadlines, lockout windows, leases, certificate dates.
    pub clock: Arc<dyn Clock>,
}

/// What one session's attempt record needs: who connected, when, and (once known) the device
/// and why it was refused. What the session has proven is not here: it is the [`Claim`]
/// inside the session's [`Authorized`].
#[derive(Debug)]
pub struct SessionContext {
    pub session_id: u32,
    /// The live settings as the session started; a reload meanwhile does not change them.
    pub live: Arc<LiveSettings>,
    pub peer: SocketAddr,
    pub started_at: Timestamp,
    /// Set once the device is known to exist.
    pub device: Option<DeviceName>,
    /// Why authentication failed, for the attempt record (never the submitted secret).
    pub detail: Option<String>,
}

impl SessionContext {
    pub fn new(
        session_id: u32,
        peer: SocketAddr,
        live: Arc<LiveSettings>,
        started_at: DateTime<Utc>,
    ) -> SessionContext {
        SessionContext {
            session_id,
            live,
            peer,
            started_at,
            device: None,
            detail: None,
        }
    }

    fn source(&self) -> String {
        self.peer.ip().to_string()
    }

    /// This session's entry in the attempt history, ending now with `outcome` (`None` before
    /// the device is known).
    fn attempt(
        &self,
        operation_id: Option<i64>,
        outcome: Outcome,
        now: DateTime<Utc>,
    ) -> Option<Attempt> {
        Some(Attempt {
            device_name: self.device.clone()?,
            operation_id,
            session_id: self.session_id,
            source_addr: self.source(),
            started_at: self.started_at,
            ended_at: now,
            outcome: outcome.as_str().to_string(),
            detail: self
                .detail
                .clone()
                .unwrap_or_else(|| outcome.detail().to_string()),
        })
    }
}

/// The operation a session authenticated for and claimed: what `authenticate` hands the
/// session (inside [`Authorized`]) and every later step works on.
#[derive(Debug)]
pub struct Claim {
    device: DeviceName,
    operation: Operation,
    /// The operation's key-generation attempts, this session's counted (installs only).
    keygen_attempts: u32,
    /// The phone sent a public key in this session.
    key_received: bool,
    /// Another session took the claim over while this one ran: the operation is that
    /// session's now, and this one leaves it alone.
    lost: bool,
}

/// A certificate issued in this session, awaiting the phone's confirmation: its record id.
#[derive(Debug)]
pub struct IssuedRecord(i64);

/// The service as one connection sees it: [`SessionService`] for capf-proto's session.
#[derive(Debug)]
pub struct ServiceSession<'a> {
    service: &'a Service,
    ctx: SessionContext,
}

impl<'a> ServiceSession<'a> {
    pub fn new(service: &'a Service, ctx: SessionContext) -> ServiceSession<'a> {
        ServiceSession { service, ctx }
    }
}

impl SessionService for ServiceSession<'_> {
    type Claim = Claim;
    type Issued = IssuedRecord;

    async fn authenticate(&mut self, attempt: &AuthAttempt) -> AuthVerdict<Claim> {
        self.service.authenticate(&mut self.ctx, attempt).await
    }

    async fn issue(
        &mut self,
        op: &mut Authorized<Claim>,
        public_key: Vec<u8>,
    ) -> Result<Issued<IssuedRecord>, IssueFailure> {
        self.service.issue(&mut self.ctx, op, public_key).await
    }

    async fn record_store(
        &mut self,
        op: &mut Authorized<Claim>,
        issued: &IssuedRecord,
        stored: bool,
    ) -> Result<(), RecordFailure> {
        self.service
            .record_store(&mut self.ctx, op, issued, stored)
            .await
    }

    async fn record_fetch(
        &mut self,
        op: &mut Authorized<Claim>,
        certificate: Option<(CertType, Vec<u8>)>,
    ) -> Result<(), RecordFailure> {
        self.service
            .record_fetch(&mut self.ctx, op, certificate)
            .await
    }

    async fn record_delete(
        &mut self,
        op: &mut Authorized<Claim>,
        _deleted: bool,
    ) -> Result<(), RecordFailure> {
        self.service.record_delete(&mut self.ctx, op).await
    }

    async fn finish(&mut self, op: Option<Authorized<Claim>>, outcome: Outcome) {
        self.service.finish(&self.ctx, op, outcome).await
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

/// How often a node renews the claims of its live sessions: a third of the lease
/// (`Settings::claim_lease`, 90 s by default), so one late renewal does not lose a claim. A
/// node that dies stops renewing and its claims run out within the lease, so the phone's
/// retry on another node (or on this one restarted) is served.
pub fn claim_renew_every(lease: std::time::Duration) -> std::time::Duration {
    lease / 3
}

impl Service {
    pub fn new(
        store: Arc<dyn Store>,
        issuer: Arc<Issuer>,
        settings: Arc<Settings>,
        anchors: TrustAnchors,
        metrics: Arc<dyn Metrics>,
        clock: Arc<dyn Clock>,
    ) -> Service {
        Service {
            store,
            issuer,
            live: Arc::new(LiveConfig::new(settings.live.clone())),
            settings,
            anchors: RwLock::new(Arc::new(anchors)),
            unreleased: Mutex::default(),
            live_claimants: Mutex::default(),
            run: rand::random(),
            crypto: CryptoPool::per_core(),
            metrics,
            clock,
        }
    }

    /// Who holds a claim: this node, this run of it and this session. Two sessions for one
    /// device, even on the same node, never both hold the operation.
    fn claimant(&self, ctx: &SessionContext) -> String {
        format!("{}{:08x}", self.claimant_prefix(), ctx.session_id)
    }

    fn unreleased_claims(&self) -> MutexGuard<'_, Vec<(i64, String)>> {
        self.unreleased.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn live_claims(&self) -> MutexGuard<'_, HashSet<String>> {
        self.live_claimants
            .lock()
            .unwrap_or_else(|e| e.into_inner())
    }

    /// Claims the operation for this session: free, expired, or held by an ended session of
    /// this node run (its release may still be on its way, or have failed while the database
    /// was away; the phone's retry must not wait for it). `None` when another session holds
    /// it; otherwise the key-generation attempts, this one counted for an install.
    async fn claim_for(
        &self,
        op: &Operation,
        claimant: &str,
        now: Timestamp,
    ) -> Result<Option<u32>, StoreError> {
        let count_keygen = op.kind == OperationKind::Install;
        let claim = |from: Option<String>| async move {
            self.store
                .claim_for_session(
                    op.id,
                    from.as_deref(),
                    claimant,
                    now,
                    self.settings.claim_lease,
                    count_keygen,
                )
                .await
        };
        if let Some(attempts) = claim(None).await? {
            return Ok(Some(attempts));
        }
        let holder = self
            .store
            .operation(op.id)
            .await?
            .and_then(|o| o.claimed_by);
        let Some(holder) = holder else {
            return Ok(None);
        };
        if !holder.starts_with(&self.claimant_prefix()) || self.live_claims().contains(&holder) {
            return Ok(None);
        }
        claim(Some(holder)).await
    }

    /// Releases the claims ended sessions could not release; true when none is left.
    pub async fn retry_releases(&self) -> bool {
        let pending = std::mem::take(&mut *self.unreleased_claims());
        let mut failed = Vec::new();
        for (op_id, claimant) in pending {
            if self.store.release(op_id, &claimant).await.is_err() {
                failed.push((op_id, claimant));
            }
        }
        let done = failed.is_empty();
        self.unreleased_claims().extend(failed);
        done
    }

    /// Prefix of every claimant of this run of the node, for [`Store::renew_claims`].
    pub fn claimant_prefix(&self) -> String {
        format!("{}/{:08x}/", self.settings.node_id, self.run)
    }

    pub fn trust_anchors(&self) -> Arc<TrustAnchors> {
        Arc::clone(&self.anchors.read().unwrap_or_else(|e| e.into_inner()))
    }

    pub fn replace_trust_anchors(&self, anchors: TrustAnchors) {
        *self.anchors.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(anchors);
    }

    /// Looks the device up, applies the lockout, checks the credentials of the operation's
    /// mode and claims the operation.
    async fn authenticate(
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

    /// Checks the phone's key and issues its LSC, recording it as awaiting confirmation.
    async fn issue(
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
                    warn!(error = %e, "phone key does not match the operation");
                    IssueFailure::WrongKey
                })?;
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

    async fn record_store(
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

    async fn record_fetch(
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

    async fn record_delete(
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
    async fn finish(&self, ctx: &SessionContext, op: Option<Authorized<Claim>>, outcome: Outcome) {
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

/// Compares secrets without revealing where they differ (nor, by hashing first, their
/// lengths).
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    let a = Sha256::digest(a);
    let b = Sha256::digest(b);
    a.ct_eq(&b).into()
}
