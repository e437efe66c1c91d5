//! Phone keys made before the clock starts. A real phone spends seconds generating an RSA
//! key; a load generator that did the same would measure its own CPU, not the server. The
//! pool's keys are handed out round-robin, so phones share them (the server does not care
//! that two phones present the same public key).

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use tokio::task::JoinSet;

use crate::phone::{KeySource, PhoneError};
use capf_model::keyspec::KeySpec;
use capf_pki::ca::phone_key::{PhoneKey, PhoneKeyError};

#[derive(Debug, thiserror::Error)]
pub enum KeyPoolError {
    #[error("generating {spec} phone keys: {source}")]
    Generate {
        spec: KeySpec,
        source: PhoneKeyError,
    },
    #[error("generating phone keys: a worker failed: {0}")]
    Worker(String),
}

pub(super) struct KeyPool {
    spec: KeySpec,
    keys: Vec<Arc<PhoneKey>>,
    next: AtomicUsize,
}

impl KeyPool {
    /// Generates `count` (at least one) keys, on as many blocking threads as there are
    /// cores.
    pub(super) async fn generate(spec: KeySpec, count: usize) -> Result<KeyPool, KeyPoolError> {
        let count = count.max(1);
        let workers = std::thread::available_parallelism()
            .map(usize::from)
            .unwrap_or(1)
            .min(count);
        let mut tasks = JoinSet::new();
        for w in 0..workers {
            // Spread the remainder over the first workers.
            let share = count / workers + usize::from(w < count % workers);
            tasks.spawn_blocking(move || {
                (0..share)
                    .map(|_| PhoneKey::generate(spec).map(Arc::new))
                    .collect::<Result<Vec<_>, _>>()
            });
        }
        let mut keys = Vec::with_capacity(count);
        while let Some(done) = tasks.join_next().await {
            let made = done
                .map_err(|e| KeyPoolError::Worker(e.to_string()))?
                .map_err(|source| KeyPoolError::Generate { spec, source })?;
            keys.extend(made);
        }
        Ok(KeyPool {
            spec,
            keys,
            next: AtomicUsize::new(0),
        })
    }

    /// Keys in the pool.
    pub(super) fn size(&self) -> usize {
        self.keys.len()
    }

    pub(super) fn spec(&self) -> KeySpec {
        self.spec
    }
}

#[async_trait::async_trait]
impl KeySource for KeyPool {
    async fn key(&self, spec: KeySpec) -> Result<Arc<PhoneKey>, PhoneError> {
        // The pool holds one key type; a server asking for another would otherwise have us
        // generate keys inside the measurement.
        if spec != self.spec {
            return Err(PhoneError::Key(format!(
                "the server asked for an {spec} key; the key pool holds {} (use --key {spec})",
                self.spec
            )));
        }
        let i = self.next.fetch_add(1, Ordering::Relaxed) % self.keys.len().max(1);
        self.keys
            .get(i)
            .cloned()
            .ok_or_else(|| PhoneError::Key("the key pool is empty".into()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use capf_model::keyspec::Curve;

    #[tokio::test]
    async fn round_robin_over_the_requested_count() {
        let spec = KeySpec::Ec(Curve::P256);
        let pool = KeyPool::generate(spec, 3).await.unwrap();
        assert_eq!(pool.size(), 3);
        let a = pool.key(spec).await.unwrap();
        let b = pool.key(spec).await.unwrap();
        let c = pool.key(spec).await.unwrap();
        let again = pool.key(spec).await.unwrap();
        assert!(Arc::ptr_eq(&a, &again));
        assert!(!Arc::ptr_eq(&a, &b) && !Arc::ptr_eq(&b, &c));
        assert!(matches!(
            pool.key(KeySpec::Rsa(2048)).await,
            Err(PhoneError::Key(_))
        ));
        assert_eq!(KeyPool::generate(spec, 0).await.unwrap().size(), 1);
    }
}
