//! A simulated phone of the benchmark: the session of `capf phone`, with the run's shared
//! TLS configuration and keys from the pool.

use std::sync::Arc;
use std::time::Duration;

use rustls::ClientConfig;

use super::keypool::KeyPool;
use super::outcome::{classify, Outcome};
use crate::phone::{run_with, KeySource, PhoneOptions};

/// What every phone of a run shares.
pub(super) struct Phones {
    /// Options of every session but the device name.
    template: PhoneOptions,
    config: Arc<ClientConfig>,
    pool: Arc<KeyPool>,
}

impl Phones {
    pub(super) fn new(
        template: PhoneOptions,
        config: Arc<ClientConfig>,
        pool: Arc<KeyPool>,
    ) -> Phones {
        Phones {
            template,
            config,
            pool,
        }
    }

    pub(super) fn pool(&self) -> &Arc<KeyPool> {
        &self.pool
    }

    /// One session as `device`. `think`: whether the phone waits its think time before
    /// sending its key (held sessions wait for their release instead).
    pub(super) async fn session(&self, device: &str, keys: &dyn KeySource, think: bool) -> Outcome {
        let mut opts = self.template.clone();
        device.clone_into(&mut opts.device);
        if !think {
            opts.keygen_delay = Duration::ZERO;
        }
        classify(run_with(&opts, &self.config, keys).await)
    }
}
