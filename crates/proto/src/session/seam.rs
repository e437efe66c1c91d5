//! The seam between a session and the server that serves it: [`SessionService`], the work a
//! session asks for, and the typed answers.

use std::future::Future;

use capf_model::device::DeviceName;
use capf_model::keyspec::KeySpec;
use capf_model::operation::OperationKind;

use super::Outcome;
use crate::{AuthResponse, CertType};

/// What the phone presented in AUTH_RESPONSE, for the authenticator.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuthAttempt {
    pub device_name: DeviceName,
    pub version: u8,
    /// The full AUTH_RESPONSE, for certificate authentication.
    pub response: AuthResponse,
}

/// The operation a session performs once authenticated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Plan {
    pub kind: OperationKind,
    pub key: KeySpec,
}

/// The service's verdict on an [`AuthAttempt`].
#[derive(Debug)]
pub enum AuthVerdict<C> {
    UnknownDevice,
    /// Wrong credentials, locked device, or an operation another session holds.
    Refused,
    /// Authenticated, nothing scheduled.
    NoOperation,
    /// capf could not decide (database unreachable): end without blaming the phone.
    Unavailable,
    /// The phone's credentials were verified for this operation, which the service now holds
    /// for this session (`claim`). The session turns this into the [`Authorized`] that every
    /// later step needs.
    Proceed {
        plan: Plan,
        claim: C,
    },
}

/// Proof that this session's phone was authenticated for an operation, with the service's
/// claim on that operation.
///
/// The guarantee: nothing can be issued or recorded for a phone that was not verified. Every
/// [`SessionService`] method that acts on an operation takes an `Authorized`, and there is no
/// way to make one outside this crate: only the session builds it, from the
/// [`AuthVerdict::Proceed`] that its service's `authenticate` returned for this connection,
/// and it lends it to the service only while the session is in a state past authentication.
/// The service can say "verified", but cannot make the value that lets it issue; the
/// connection driver never holds one at all.
#[derive(Debug)]
pub struct Authorized<C> {
    plan: Plan,
    claim: C,
}

impl<C> Authorized<C> {
    pub(super) fn new(plan: Plan, claim: C) -> Authorized<C> {
        Authorized { plan, claim }
    }

    pub fn plan(&self) -> Plan {
        self.plan
    }

    pub fn claim(&self) -> &C {
        &self.claim
    }

    /// The service updates its claim as the session goes (a key received, the claim lost).
    pub fn claim_mut(&mut self) -> &mut C {
        &mut self.claim
    }
}

/// A certificate issued for the phone: what the session sends, and the service's record of it
/// for confirming the install.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Issued<R> {
    pub der: Vec<u8>,
    pub record: R,
}

/// Why no certificate was issued.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IssueFailure {
    /// The phone's key is not the scheduled algorithm/size/curve, or is malformed.
    WrongKey,
    /// Another session took the operation over: the certificate was discarded.
    ClaimLost,
    /// Signing or recording failed on our side.
    Internal,
}

/// Why an outcome could not be recorded durably.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RecordFailure {
    /// The database could not be written.
    Unavailable,
    /// Another session took the operation over; the outcome is that session's.
    ClaimLost,
    /// The certificate a phone returned cannot be read.
    UnreadableCertificate,
}

/// The work a session asks of the server: authenticate against the store, issue through the
/// CA, record outcomes. One value serves one connection, hence `&mut self`.
///
/// The futures are `Send` so that a connection task can run on any worker thread.
pub trait SessionService {
    /// The service's hold on an authenticated operation; carried inside [`Authorized`].
    type Claim: Send;
    /// The service's record of an issued certificate, handed back to confirm the install.
    type Issued: Send;

    /// Looks the device up, checks its credentials for the pending operation and claims it.
    fn authenticate(
        &mut self,
        attempt: &AuthAttempt,
    ) -> impl Future<Output = AuthVerdict<Self::Claim>> + Send;

    /// Checks the phone's key against the plan and issues its certificate.
    fn issue(
        &mut self,
        op: &mut Authorized<Self::Claim>,
        public_key: Vec<u8>,
    ) -> impl Future<Output = Result<Issued<Self::Issued>, IssueFailure>> + Send;

    /// The phone answered STORE_CERTIFICATE_REQUEST; `stored` is its REASON 1.
    fn record_store(
        &mut self,
        op: &mut Authorized<Self::Claim>,
        issued: &Self::Issued,
        stored: bool,
    ) -> impl Future<Output = Result<(), RecordFailure>> + Send;

    /// The phone answered FETCH_CERTIFICATE_REQUEST, with its certificate if it had one.
    fn record_fetch(
        &mut self,
        op: &mut Authorized<Self::Claim>,
        certificate: Option<(CertType, Vec<u8>)>,
    ) -> impl Future<Output = Result<(), RecordFailure>> + Send;

    /// The phone answered DELETE_CERTIFICATE_REQUEST; `deleted` is its REASON 1.
    fn record_delete(
        &mut self,
        op: &mut Authorized<Self::Claim>,
        deleted: bool,
    ) -> impl Future<Output = Result<(), RecordFailure>> + Send;

    /// The session is over: write the attempt history and give the claim back, if any.
    fn finish(
        &mut self,
        op: Option<Authorized<Self::Claim>>,
        outcome: Outcome,
    ) -> impl Future<Output = ()> + Send;
}
