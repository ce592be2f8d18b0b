//! The worker's end of the transfer layer: start a UCX agent and build the
//! engine's KV arena in memory the agent allocated, pull blocks for the
//! decode engine ([`TransportLoader`] implements the engine's `KvLoader`),
//! and free prefill leases when a decode worker's read-done notification
//! arrives.

use std::collections::HashMap;
use std::hash::{DefaultHasher, Hash, Hasher};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use parking_lot::Mutex;
use tandem_engine::engine_core::EngineCore;
use tandem_engine::kv_cache::{HostArena, KvCache};
use tandem_engine::kv_handoff::{KvLoad, KvLoadDone, KvLoader};
use tandem_engine::runner::{DeviceSpec, ModelRunner, RunnerOptions};
use tandem_engine::{EngineOptions, LoadedModel};
use tandem_transport::{
    Agent, AllocatedRegion, BackendConfig, LayoutDescriptor, RemoteAgent, UcxConfig,
};

use super::leases::Leases;
use super::metrics::KvMetrics;

/// Starts a UCX agent named `name` on `transports` (UCX_TLS; `None` lets
/// UCX choose).
pub fn start_agent(name: &str, transports: Option<String>) -> anyhow::Result<Arc<Agent>> {
    let config = UcxConfig {
        transports,
        ..UcxConfig::default()
    };
    let agent = Agent::new(name, BackendConfig::Ucx(config))
        .context("starting the UCX transfer agent (is libucx installed?)")?;
    Ok(Arc::new(agent))
}

/// The owner of an arena in agent-allocated memory. The agent frees the
/// region when it drops, so the region's handle keeps the agent alive:
/// the arena (which holds this) can never outlive its memory, and the
/// agent, wherever else it is shared, stays up while the engine uses it.
struct AgentRegion {
    _region: AllocatedRegion,
    _agent: Arc<Agent>,
}

/// The engine core of a prefill or decode worker on the CPU, its KV arena
/// allocated by `agent` (`Agent::allocate_region`) and registered with it,
/// so a peer on the same host reads blocks with one memcpy instead of
/// UCX's emulated get of registered user memory. Sized as
/// `LoadedModel::build_core` sizes it (`--kv-cache-memory` or the default).
/// `model_id` goes into the layout handshake: peers serving another model
/// are refused.
pub fn build_core_over_agent(
    agent: &Arc<Agent>,
    model: &LoadedModel,
    opts: &EngineOptions,
    model_id: &str,
) -> anyhow::Result<EngineCore> {
    if opts.device != DeviceSpec::Cpu {
        anyhow::bail!(
            "--role prefill and --role decode run only with --device cpu for now: moving KV \
             blocks out of GPU memory is not built yet; run --role both (colocated) on a GPU"
        );
    }
    let runner_opts = RunnerOptions::from_engine(opts);
    let layout = ModelRunner::host_layout(&model.model, &runner_opts)?;
    let dtype = model.model.dtype();
    let descriptor = LayoutDescriptor {
        model_id: model_id.to_string(),
        dtype: format!("{dtype:?}").to_lowercase(),
        block_size: layout.block_size as u32,
        num_layers: layout.num_layers as u32,
        num_kv_heads: layout.num_kv_heads as u32,
        head_dim: layout.head_dim as u32,
    };
    let block_bytes = KvCache::bytes_per_block(&model.config, layout.block_size, dtype);
    let num_blocks = u32::try_from(layout.num_blocks).with_context(|| {
        format!(
            "{} KV blocks are more than a transfer region holds; lower --kv-cache-memory",
            layout.num_blocks
        )
    })?;
    let region = agent
        .allocate_region(block_bytes, num_blocks, descriptor)
        .context("allocating the KV arena through the UCX agent")?;
    let (base, len) = (region.as_mut_ptr(), region.len());
    // SAFETY: `region` is `len` bytes UCX just allocated and registered;
    // no peer has our metadata yet, so nothing else reads or writes it.
    // The engine expects a zeroed arena and UCX does not zero it.
    unsafe { std::ptr::write_bytes(base, 0, len) };
    let owner: Arc<dyn Send + Sync> = Arc::new(AgentRegion {
        _region: region,
        _agent: agent.clone(),
    });
    // SAFETY: the bytes stay valid while `owner` lives (it holds the agent,
    // which frees them only when dropped), and the arena keeps `owner`.
    // Besides the engine thread, only the agent touches them, under the
    // rule HostArena documents: peers read blocks a lease holds (the
    // engine does not write them until the lease ends), and our reads
    // write blocks of a loading sequence the engine does not touch.
    let arena = unsafe { HostArena::foreign(base, len, dtype, owner) }
        .context("wrapping the agent's region as the KV arena")?;
    let runner = ModelRunner::with_host_arena(&model.model, &runner_opts, arena)?;
    Ok(EngineCore::new(
        runner,
        model.eos_token_ids.clone(),
        opts.scheduler.clone(),
        opts.seed,
    )?)
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
    fn key(metadata: &[u8]) -> u64 {
        let mut h = DefaultHasher::new();
        metadata.hash(&mut h);
        h.finish()
    }

    fn peer(&self, metadata: &[u8]) -> Result<RemoteAgent, String> {
        let key = Self::key(metadata);
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
            .map_err(|e| e.to_string())
            .and_then(|r| r.wait().map_err(|e| e.to_string()));
        if done.is_err() {
            // A failed read (a timeout breaks the connection) must not
            // disable every later pull from this worker: the next one
            // connects again.
            self.peers.lock().remove(&Self::key(&load.remote.agent));
        }
        Ok(done?.bytes)
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
