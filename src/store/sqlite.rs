//! Placeholder until the implementation lands.

use async_trait::async_trait;

use super::*;

#[derive(Debug)]
pub struct SqliteStore;

impl SqliteStore {
    pub async fn open(_url: &DatabaseUrl) -> Result<Self> {
        Err(StoreError::Unavailable("not implemented".into()))
    }
}

#[async_trait]
impl Store for SqliteStore {
    async fn ping(&self) -> Result<()> {
        unimplemented!()
    }
    async fn ensure_device(&self, _name: &DeviceName, _now: Timestamp) -> Result<Device> {
        unimplemented!()
    }
    async fn device(&self, _name: &DeviceName) -> Result<Option<Device>> {
        unimplemented!()
    }
    async fn set_require_sudi(
        &self,
        _name: &DeviceName,
        _require: bool,
        _now: Timestamp,
    ) -> Result<()> {
        unimplemented!()
    }
    async fn schedule(&self, _op: NewOperation, _now: Timestamp) -> Result<Operation> {
        unimplemented!()
    }
    async fn cancel(&self, _name: &DeviceName, _now: Timestamp) -> Result<Option<Operation>> {
        unimplemented!()
    }
    async fn operation(&self, _id: i64) -> Result<Option<Operation>> {
        unimplemented!()
    }
    async fn latest_operation(&self, _name: &DeviceName) -> Result<Option<Operation>> {
        unimplemented!()
    }
    async fn pending_operation(
        &self,
        _name: &DeviceName,
        _now: Timestamp,
    ) -> Result<Option<Operation>> {
        unimplemented!()
    }
    async fn expire_operations(&self, _now: Timestamp) -> Result<u64> {
        unimplemented!()
    }
    async fn claim(
        &self,
        _op_id: i64,
        _node: &str,
        _now: Timestamp,
        _lease: Duration,
    ) -> Result<bool> {
        unimplemented!()
    }
    async fn release(&self, _op_id: i64, _node: &str) -> Result<()> {
        unimplemented!()
    }
    async fn count_keygen_attempt(&self, _op_id: i64, _now: Timestamp) -> Result<u32> {
        unimplemented!()
    }
    async fn fail_operation(
        &self,
        _op_id: i64,
        _cause: FailureCause,
        _now: Timestamp,
    ) -> Result<()> {
        unimplemented!()
    }
    async fn record_issued(
        &self,
        _op_id: i64,
        _cert: NewCertificate,
        _now: Timestamp,
    ) -> Result<i64> {
        unimplemented!()
    }
    async fn confirm_install(&self, _op_id: i64, _cert_id: i64, _now: Timestamp) -> Result<()> {
        unimplemented!()
    }
    async fn complete_fetch(
        &self,
        _op_id: i64,
        _cert: Option<NewCertificate>,
        _now: Timestamp,
    ) -> Result<()> {
        unimplemented!()
    }
    async fn complete_delete(&self, _op_id: i64, _now: Timestamp) -> Result<()> {
        unimplemented!()
    }
    async fn current_certificate(&self, _name: &DeviceName) -> Result<Option<CertificateRecord>> {
        unimplemented!()
    }
    async fn certificates(&self, _name: &DeviceName) -> Result<Vec<CertificateRecord>> {
        unimplemented!()
    }
    async fn certificate_by_fingerprint(
        &self,
        _name: &DeviceName,
        _fingerprint_sha256: &str,
    ) -> Result<Option<CertificateRecord>> {
        unimplemented!()
    }
    async fn lock_state(&self, _name: &DeviceName) -> Result<LockState> {
        unimplemented!()
    }
    async fn record_auth_failure(
        &self,
        _name: &DeviceName,
        _cause: &str,
        _source_addr: &str,
        _now: Timestamp,
        _policy: LockoutPolicy,
    ) -> Result<LockState> {
        unimplemented!()
    }
    async fn record_locked_attempt(
        &self,
        _name: &DeviceName,
        _source_addr: &str,
        _now: Timestamp,
    ) -> Result<()> {
        unimplemented!()
    }
    async fn record_auth_success(&self, _name: &DeviceName, _now: Timestamp) -> Result<()> {
        unimplemented!()
    }
    async fn unlock(&self, _name: &DeviceName, _now: Timestamp) -> Result<()> {
        unimplemented!()
    }
    async fn record_attempt(&self, _attempt: Attempt) -> Result<()> {
        unimplemented!()
    }
    async fn attempts(&self, _name: &DeviceName, _limit: u32) -> Result<Vec<Attempt>> {
        unimplemented!()
    }
    async fn audit(
        &self,
        _device_name: Option<&DeviceName>,
        _operation_id: Option<i64>,
        _kind: &str,
        _source_addr: Option<&str>,
        _detail: &str,
        _now: Timestamp,
    ) -> Result<()> {
        unimplemented!()
    }
    async fn events(&self, _filter: EventFilter) -> Result<Vec<Event>> {
        unimplemented!()
    }
}
