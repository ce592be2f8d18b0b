//! The router's view of its workers: who they are (URLs, where a DNS name
//! may stand for several, as a Kubernetes headless Service does), whether
//! they are healthy (polled; a dead worker is out within two seconds and
//! back once it answers), their load, and the block hashes each caches
//! (from its KV-event stream).

use std::collections::HashSet;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use parking_lot::{Mutex, RwLock, RwLockReadGuard};
use tandem_engine::kv_cache::{BlockHash, KvEvent};

use super::client::WorkerClient;
use crate::worker::wire::{KvEventLine, WorkerStatus};
use crate::worker::Role;

/// How often workers are polled, and how long a poll may take: a dead
/// worker is noticed within their sum.
const POLL_EVERY: Duration = Duration::from_millis(500);
const POLL_TIMEOUT: Duration = Duration::from_millis(1000);

/// One worker process.
pub struct Worker {
    pub url: String,
    pub role: Role,
    healthy: AtomicBool,
    /// Requests the router sent here that have not ended.
    inflight: AtomicUsize,
    status: Mutex<Option<WorkerStatus>>,
    cached: RwLock<HashSet<BlockHash>>,
    /// Set when discovery dropped this worker: its tasks end.
    retired: AtomicBool,
}

impl Worker {
    fn new(url: String, role: Role) -> Self {
        Worker {
            url,
            role,
            healthy: AtomicBool::new(false),
            inflight: AtomicUsize::new(0),
            status: Mutex::new(None),
            cached: RwLock::new(HashSet::new()),
            retired: AtomicBool::new(false),
        }
    }

    pub fn is_healthy(&self) -> bool {
        self.healthy.load(Ordering::Acquire)
    }

    /// Takes the worker out of routing at once (a call to it just failed);
    /// the next successful poll brings it back.
    pub fn mark_failed(&self) {
        self.healthy.store(false, Ordering::Release);
    }

    pub fn status(&self) -> Option<WorkerStatus> {
        self.status.lock().clone()
    }

    /// Running plus waiting, or the router's own count if larger (the
    /// status lags behind assignments).
    pub fn queue(&self) -> usize {
        let reported = self
            .status()
            .map(|s| s.num_running + s.num_waiting)
            .unwrap_or(0);
        reported.max(self.inflight.load(Ordering::Relaxed))
    }

    pub fn kv_usage(&self) -> f64 {
        self.status().map(|s| s.kv_usage).unwrap_or(0.0)
    }

    pub fn cached(&self) -> RwLockReadGuard<'_, HashSet<BlockHash>> {
        self.cached.read()
    }

    /// Counts a request routed here until the guard drops.
    pub fn assign(self: &Arc<Self>) -> Assignment {
        self.inflight.fetch_add(1, Ordering::Relaxed);
        Assignment(self.clone())
    }

    fn apply(&self, line: KvEventLine) {
        let mut cached = self.cached.write();
        match line {
            KvEventLine::Snapshot { hashes } => *cached = hashes.into_iter().collect(),
            KvEventLine::Event(KvEvent::BlockStored { hashes, .. }) => cached.extend(hashes),
            KvEventLine::Event(KvEvent::BlockRemoved { hashes }) => {
                for h in hashes {
                    cached.remove(&h);
                }
            }
            KvEventLine::Event(KvEvent::AllBlocksCleared) => cached.clear(),
        }
    }
}

/// A request in flight on a worker.
pub struct Assignment(Arc<Worker>);

impl Drop for Assignment {
    fn drop(&mut self) {
        self.0.inflight.fetch_sub(1, Ordering::Relaxed);
    }
}

/// A worker address as given on the command line.
#[derive(Clone, Debug)]
pub struct Seed {
    pub url: String,
    pub role: Role,
}

pub struct WorkerPool {
    /// Changes only when `tandem serve` restarts a worker on a new port.
    seeds: RwLock<Vec<Seed>>,
    workers: RwLock<Vec<Arc<Worker>>>,
    client: WorkerClient,
    /// One discovery pass at a time, so a pass that resolved the seeds
    /// before a [`replace`](Self::replace) cannot undo it.
    discovering: tokio::sync::Mutex<()>,
}

impl WorkerPool {
    pub fn new(seeds: Vec<Seed>, client: WorkerClient) -> Arc<Self> {
        Arc::new(WorkerPool {
            seeds: RwLock::new(seeds),
            workers: RwLock::new(Vec::new()),
            client,
            discovering: tokio::sync::Mutex::new(()),
        })
    }

    pub fn client(&self) -> &WorkerClient {
        &self.client
    }

    pub fn workers(&self) -> Vec<Arc<Worker>> {
        self.workers.read().clone()
    }

    /// Healthy workers that can play `role`: `Both` workers decode (whole
    /// requests) but hold no KV for others, so they never prefill.
    pub fn healthy(&self, role: Role) -> Vec<Arc<Worker>> {
        self.workers()
            .into_iter()
            .filter(|w| {
                w.is_healthy() && (w.role == role || (w.role == Role::Both && role == Role::Decode))
            })
            .collect()
    }

    pub fn has_role(&self, role: Role) -> bool {
        self.seeds.read().iter().any(|s| s.role == role)
    }

    /// Takes the worker at `url` out of routing now (its process exited);
    /// calls in flight to it fail on their own.
    pub fn mark_down(&self, url: &str) {
        for w in self.workers().iter().filter(|w| w.url == url) {
            w.mark_failed();
        }
    }

    /// The worker that answered at `old` now answers at `new` (`tandem
    /// serve` restarted it on another port): follows `new` at once and
    /// drops `old`. A new address is a new [`Worker`], so nothing learnt
    /// about the dead process (its cached blocks, its KV leases, whose ids
    /// the new process reuses) is ever sent to the new one.
    pub async fn replace(self: &Arc<Self>, old: &str, new: &str) {
        for seed in self.seeds.write().iter_mut().filter(|s| s.url == old) {
            seed.url = new.to_string();
        }
        self.discover().await;
    }

    /// Resolves the seeds now and then every `every`, polling and following
    /// each worker found. Runs until the runtime stops.
    pub fn start(self: &Arc<Self>, every: Duration) {
        let this = self.clone();
        tokio::spawn(async move {
            loop {
                this.discover().await;
                tokio::time::sleep(every).await;
            }
        });
    }

    /// Waits until every seed has at least one healthy worker, or `timeout`.
    pub async fn wait_ready(&self, timeout: Duration) -> bool {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let ready = self.seeds.read().iter().all(|s| {
                self.workers()
                    .iter()
                    .any(|w| w.role == s.role && w.is_healthy())
            });
            if ready {
                return true;
            }
            if tokio::time::Instant::now() >= deadline {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    async fn discover(self: &Arc<Self>) {
        let _one_at_a_time = self.discovering.lock().await;
        let seeds = self.seeds.read().clone();
        let mut found: Vec<(String, Role)> = Vec::new();
        for seed in &seeds {
            match resolve(&seed.url).await {
                Ok(urls) => found.extend(urls.into_iter().map(|u| (u, seed.role))),
                Err(e) => {
                    tracing::warn!(url = seed.url, error = %e, "cannot resolve worker address")
                }
            }
        }
        let mut workers = self.workers.write();
        workers.retain(|w| {
            let keep = found.iter().any(|(u, r)| *u == w.url && *r == w.role);
            if !keep {
                tracing::info!(url = w.url, "worker no longer resolves; dropping it");
                w.retired.store(true, Ordering::Release);
            }
            keep
        });
        for (url, role) in found {
            if workers.iter().any(|w| w.url == url && w.role == role) {
                continue;
            }
            tracing::info!(url, role = role.name(), "following worker");
            let w = Arc::new(Worker::new(url, role));
            tokio::spawn(poll(w.clone(), self.client.clone()));
            tokio::spawn(follow_kv_events(w.clone(), self.client.clone()));
            workers.push(w);
        }
    }
}

/// `http://host:port` → one URL per address `host` resolves to (an IP
/// literal is itself).
async fn resolve(url: &str) -> anyhow::Result<Vec<String>> {
    let rest = url
        .strip_prefix("http://")
        .ok_or_else(|| anyhow::anyhow!("worker URL {url:?} must start with http://"))?;
    let authority = rest.split('/').next().unwrap_or(rest);
    if authority.parse::<SocketAddr>().is_ok() {
        return Ok(vec![format!("http://{authority}")]);
    }
    let addrs: Vec<SocketAddr> = tokio::net::lookup_host(authority).await?.collect();
    let mut urls: Vec<String> = addrs.iter().map(|a| format!("http://{a}")).collect();
    urls.sort();
    urls.dedup();
    Ok(urls)
}

/// Polls `/internal/status` until the worker is retired.
async fn poll(w: Arc<Worker>, client: WorkerClient) {
    while !w.retired.load(Ordering::Acquire) {
        match client.status(&w.url, POLL_TIMEOUT).await {
            Ok(s) if s.healthy => {
                if !w.is_healthy() {
                    tracing::info!(url = w.url, "worker healthy");
                }
                *w.status.lock() = Some(s);
                w.healthy.store(true, Ordering::Release);
            }
            outcome => {
                if w.is_healthy() {
                    let why = match outcome {
                        Ok(_) => "its engine stopped".to_string(),
                        Err(e) => e.to_string(),
                    };
                    tracing::warn!(url = w.url, why, "worker down; routing around it");
                }
                w.mark_failed();
            }
        }
        tokio::time::sleep(POLL_EVERY).await;
    }
}

/// Keeps the worker's cached-hash set current from its KV-event stream,
/// reconnecting (and re-snapshotting) whenever the stream breaks.
async fn follow_kv_events(w: Arc<Worker>, client: WorkerClient) {
    while !w.retired.load(Ordering::Acquire) {
        if w.is_healthy() {
            if let Ok(mut lines) = client.kv_events(&w.url).await {
                while let Some(Ok(line)) = lines.next().await {
                    w.apply(line);
                    if w.retired.load(Ordering::Acquire) {
                        return;
                    }
                }
            }
            // Stream ended: what we knew may be stale.
            w.cached.write().clear();
        }
        tokio::time::sleep(POLL_EVERY).await;
    }
}

#[cfg(test)]
mod tests {
    use super::resolve;

    #[tokio::test]
    async fn names_resolve_to_every_address_and_literals_to_themselves() {
        assert_eq!(
            resolve("http://10.1.2.3:8000").await.unwrap(),
            ["http://10.1.2.3:8000"]
        );
        let local = resolve("http://localhost:8001").await.unwrap();
        assert!(
            local.contains(&"http://127.0.0.1:8001".to_string()),
            "{local:?}"
        );
        assert!(
            resolve("10.0.0.1:80").await.is_err(),
            "the scheme is required"
        );
    }
}
