//! What a session's effects do: authenticate against the store, issue through the CA, record
//! outcomes. [`ServiceSession`] is capf-proto's [`SessionService`] for one connection; the
//! session state machine decides when each method runs, and hands the [`Authorized`]
//! operation to those that act on it.

use std::collections::HashSet;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard, RwLock};

use chrono::{DateTime, Utc};

use crate::config::{LiveConfig, LiveSettings, Settings};
use crate::crypto_pool::CryptoPool;
use crate::metrics::Metrics;
use capf_model::clock::Clock;
use capf_model::device::DeviceName;
use capf_model::operation::OperationKind;
use capf_pki::auth::TrustAnchors;
use capf_pki::ca::lsc::Issuer;
use capf_proto::session::{
    AuthAttempt, AuthVerdict, Authorized, IssueFailure, Issued, Outcome, RecordFailure,
    SessionService,
};
use capf_proto::CertType;
use capf_store::{Attempt, Operation, Store, StoreError, Timestamp};

mod authenticate;
mod records;

pub use authenticate::verify_auth_response;

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
}
