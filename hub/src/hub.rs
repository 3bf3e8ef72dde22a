//! One hub: its configuration, its registry, the wake-ups it has asked workers for and the drains
//! it runs.

use std::collections::HashMap;
use std::sync::{Mutex, MutexGuard};

use tokio::sync::watch;

use crate::config::HubConfig;
use crate::draining::DrainStatus;
use crate::registry::Registry;

/// What the hub's API, DNS and housekeeping share.
pub struct Hub {
    pub config: HubConfig,
    registry: Mutex<Registry>,
    /// The bearer token of the workers' APIs.
    pub(crate) worker_token: String,
    /// Wake-ups asked of workers and not finished, by tenant: each receiver turns `true` when
    /// its swap-in has ended (well or not).
    pub(crate) wakes: Mutex<HashMap<String, watch::Receiver<bool>>>,
    /// Held while a tenant is placed on another worker: one placement at a time.
    pub(crate) placing: tokio::sync::Mutex<()>,
    /// The last drain of each worker drained since the hub started, by worker.
    pub(crate) drains: Mutex<HashMap<String, DrainStatus>>,
}

impl Hub {
    pub fn new(config: HubConfig, registry: Registry, worker_token: String) -> Hub {
        Hub {
            config,
            registry: Mutex::new(registry),
            worker_token,
            wakes: Mutex::new(HashMap::new()),
            placing: tokio::sync::Mutex::new(()),
            drains: Mutex::new(HashMap::new()),
        }
    }

    /// The registry, locked (never held across an await).
    pub fn registry(&self) -> MutexGuard<'_, Registry> {
        lock(&self.registry)
    }
}

/// Locks `mutex`, taking it over from a holder that panicked (the registry stays consistent:
/// every change is one assignment).
pub(crate) fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}
