//! Session ids: random, non-zero, unique among this node's live sessions (spec 1.3). A
//! counter would repeat after a restart and make a recorded SUDI signature replayable.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};

use rand::RngCore;

#[derive(Debug, Default)]
pub struct SessionIds {
    live: Mutex<HashSet<u32>>,
}

/// A live session id; freed when dropped.
#[derive(Debug)]
pub struct SessionId {
    id: u32,
    owner: Arc<SessionIds>,
}

impl SessionId {
    pub fn get(&self) -> u32 {
        self.id
    }
}

impl Drop for SessionId {
    fn drop(&mut self) {
        if let Ok(mut live) = self.owner.live.lock() {
            live.remove(&self.id);
        }
    }
}

impl SessionIds {
    pub fn allocate(self: &Arc<Self>) -> SessionId {
        let mut rng = rand::rngs::OsRng;
        loop {
            let id = rng.next_u32();
            if id == 0 {
                continue;
            }
            // A poisoned lock only means another thread panicked mid-insert; the set is
            // still usable.
            let mut live = self.live.lock().unwrap_or_else(|e| e.into_inner());
            if live.insert(id) {
                return SessionId {
                    id,
                    owner: Arc::clone(self),
                };
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_unique_while_live_and_freed_after() {
        let ids = Arc::new(SessionIds::default());
        let held: Vec<_> = (0..1000).map(|_| ids.allocate()).collect();
        let distinct: HashSet<u32> = held.iter().map(|i| i.get()).collect();
        assert_eq!(distinct.len(), 1000);
        assert!(!distinct.contains(&0));
        drop(held);
        assert!(ids.live.lock().unwrap().is_empty());
    }
}
