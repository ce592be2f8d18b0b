//! Prefill-side leases: prompt blocks held for a decode worker, freed when
//! it says it is done (transfer notification), when the router gives the
//! request up, or when `--kv-lease-timeout` passes — seconds, not minutes,
//! so a decode worker that died does not pin memory for long.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use tandem_engine::serving::EngineHandle;

use super::metrics::KvMetrics;

pub struct Leases {
    held: Mutex<HashSet<u64>>,
    timeout: Duration,
    engine: EngineHandle,
    metrics: Arc<KvMetrics>,
}

impl Leases {
    pub fn new(engine: EngineHandle, timeout: Duration, metrics: Arc<KvMetrics>) -> Arc<Self> {
        Arc::new(Leases {
            held: Mutex::new(HashSet::new()),
            timeout,
            engine,
            metrics,
        })
    }

    /// Starts the clock on a lease the engine just created. Needs a Tokio
    /// runtime (the expiry is a timer task).
    pub fn hold(self: &Arc<Self>, lease: u64) {
        self.held.lock().insert(lease);
        let this = Arc::downgrade(self);
        let timeout = self.timeout;
        tokio::spawn(async move {
            tokio::time::sleep(timeout).await;
            if let Some(this) = this.upgrade() {
                if this.take(lease) {
                    tracing::warn!(
                        lease,
                        ?timeout,
                        "KV lease expired unpulled; freeing its blocks"
                    );
                    this.engine.release_lease(lease);
                    this.metrics.leases_expired.increment(1);
                }
            }
        });
    }

    /// Frees a lease's blocks; false when it was already gone.
    pub fn release(&self, lease: u64) -> bool {
        if !self.take(lease) {
            return false;
        }
        self.engine.release_lease(lease);
        self.metrics.leases_released.increment(1);
        true
    }

    fn take(&self, lease: u64) -> bool {
        self.held.lock().remove(&lease)
    }
}
