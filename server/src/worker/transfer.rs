//! The worker's end of the transfer layer: register the engine's KV arena
//! with a UCX agent, pull blocks for the decode engine ([`TransportLoader`]
//! implements the engine's `KvLoader`), and free prefill leases when a
//! decode worker's read-done notification arrives.

use std::collections::HashMap;
use std::hash::{DefaultHasher, Hash, Hasher};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use parking_lot::Mutex;
use tandem_engine::engine_core::EngineCore;
use tandem_engine::kv_handoff::{KvLoad, KvLoadDone, KvLoader};
use tandem_transport::{Agent, BackendConfig, LayoutDescriptor, Region, RemoteAgent, UcxConfig};

use super::leases::Leases;
use super::metrics::KvMetrics;

/// Starts a UCX agent named `name` and registers `core`'s KV arena with it.
/// `model_id` goes into the layout handshake: peers serving another model
/// are refused.
pub fn start_agent(
    name: &str,
    core: &EngineCore,
    model_id: &str,
    transports: Option<String>,
) -> anyhow::Result<Arc<Agent>> {
    let kv = core.runner().host_kv_cache()?;
    let layout = LayoutDescriptor {
        model_id: model_id.to_string(),
        dtype: format!("{:?}", kv.dtype).to_lowercase(),
        block_size: kv.layout.block_size as u32,
        num_layers: kv.layout.num_layers as u32,
        num_kv_heads: kv.layout.num_kv_heads as u32,
        head_dim: kv.layout.head_dim as u32,
    };
    let base = kv.host_ptr().context(
        "the KV arena is not in host memory; P/D over device memory needs the cuda feature",
    )?;
    let config = UcxConfig {
        transports,
        ..UcxConfig::default()
    };
    let agent = Agent::new(name, BackendConfig::Ucx(config))
        .context("starting the UCX transfer agent (is libucx installed?)")?;
    // SAFETY: the arena lives in the engine core, which outlives the
    // agent: the worker drops the agent only after the engine thread ended
    // (see cli::worker). Blocks being read are held by a lease; blocks being
    // written are owned by a loading sequence the engine does not touch.
    let region =
        unsafe { Region::host(base, kv.block_bytes(), kv.layout.num_blocks as u32, layout) }
            .context("describing the KV arena")?;
    agent
        .register(region)
        .context("registering the KV arena with UCX")?;
    Ok(Arc::new(agent))
}

/// Pulls prompt blocks from prefill workers into this worker's arena.
#[derive(Clone)]
pub struct TransportLoader(Arc<LoaderInner>);

struct LoaderInner {
    agent: Arc<Agent>,
    /// Peers by the hash of their metadata: a restarted prefill worker has
    /// new metadata (a new epoch) and gets a fresh connection.
    peers: Mutex<HashMap<u64, RemoteAgent>>,
    metrics: Arc<KvMetrics>,
    block_bytes: usize,
}

impl TransportLoader {
    pub fn new(agent: Arc<Agent>, metrics: Arc<KvMetrics>, block_bytes: usize) -> Self {
        TransportLoader(Arc::new(LoaderInner {
            agent,
            peers: Mutex::new(HashMap::new()),
            metrics,
            block_bytes,
        }))
    }
}

impl LoaderInner {
    fn peer(&self, metadata: &[u8]) -> Result<RemoteAgent, String> {
        let mut h = DefaultHasher::new();
        metadata.hash(&mut h);
        let key = h.finish();
        let mut peers = self.peers.lock();
        if let Some(p) = peers.get(&key) {
            return Ok(p.clone());
        }
        let remote = self
            .agent
            .add_remote(metadata)
            .map_err(|e| format!("loading the prefill worker's agent metadata: {e}"))?;
        peers.insert(key, remote.clone());
        Ok(remote)
    }

    fn pull(&self, load: &KvLoad) -> Result<u64, String> {
        let remote = self.peer(&load.remote.agent)?;
        let notify = load.remote.lease.to_le_bytes();
        let pairs: Vec<(u32, u32)> = load.pairs.iter().map(|p| (p.remote.0, p.local.0)).collect();
        let done = self
            .agent
            .read(&remote, &pairs, Some(&notify))
            .map_err(|e| e.to_string())?
            .wait()
            .map_err(|e| e.to_string())?;
        Ok(done.bytes)
    }
}

impl KvLoader for TransportLoader {
    fn start(&self, load: KvLoad, done: KvLoadDone) {
        // The read blocks until the data landed; keep it off the engine
        // thread and off the async runtime.
        let loader = self.0.clone();
        std::thread::Builder::new()
            .name("tandem-kv-pull".into())
            .spawn(move || {
                let started = Instant::now();
                let outcome = loader.pull(&load);
                let m = &loader.metrics;
                match &outcome {
                    Ok(bytes) => {
                        m.blocks_pulled.increment(load.pairs.len() as u64);
                        m.blocks_reused.increment(load.reused_blocks as u64);
                        m.bytes_pulled.increment(*bytes);
                        m.pull_seconds.record(started.elapsed().as_secs_f64());
                        tracing::debug!(
                            seq = load.seq,
                            blocks = load.pairs.len(),
                            reused = load.reused_blocks,
                            bytes,
                            block_bytes = loader.block_bytes,
                            elapsed = ?started.elapsed(),
                            "pulled prompt KV"
                        );
                    }
                    Err(_) => m.pull_failures.increment(1),
                }
                done.finish(outcome.map(|_| ()));
            })
            .expect("spawning a KV pull thread");
    }
}

/// Frees prefill leases as decode workers report their reads done.
pub struct NotificationListener {
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl NotificationListener {
    pub fn start(agent: &Agent, leases: Arc<Leases>) -> Self {
        let inbox = agent.notifications();
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let thread = std::thread::Builder::new()
            .name("tandem-kv-notify".into())
            .spawn(move || {
                while !flag.load(Ordering::Acquire) {
                    let Some(n) = inbox.recv_timeout(Duration::from_millis(200)) else {
                        continue;
                    };
                    match <[u8; 8]>::try_from(n.payload.as_slice()) {
                        Ok(bytes) => {
                            leases.release(u64::from_le_bytes(bytes));
                        }
                        Err(_) => tracing::warn!(
                            from = n.from,
                            len = n.payload.len(),
                            "ignoring a notification that is not a lease id"
                        ),
                    }
                }
            })
            .expect("spawning the notification thread");
        NotificationListener {
            stop,
            thread: Some(thread),
        }
    }
}

impl Drop for NotificationListener {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Release);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}
