//! The serving engine: [`EngineCore`] on its own thread, driven through
//! channels. Async code only ever sends commands and awaits per-request
//! output streams, so nothing in the server blocks on the model.

mod live;
mod request;
mod stream;
mod thread;

pub use live::OutputBuilder;
pub use request::{RequestOutput, ServingError, ServingRequest, StopReason, Timings, Usage};
pub use stream::RequestStream;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

use parking_lot::Mutex;
use tokio::sync::broadcast;

use crate::engine_core::{EngineCore, EngineStats};
use crate::guided::GuidanceCompiler;
use crate::kv_cache::{BlockHash, KvEvent};
use crate::kv_handoff::KvLoader;
use crate::sequence::SeqId;
use crate::tokenizer::Tokenizer;

pub(crate) enum Command {
    Add {
        id: SeqId,
        request: Box<ServingRequest>,
        tx: live::OutputSender,
        arrival: std::time::Instant,
    },
    Abort(SeqId),
    ReleaseLease(u64),
    SnapshotKv(tokio::sync::oneshot::Sender<KvSnapshot>),
    Shutdown,
}

/// Every cached block hash now, and the events that follow it.
pub struct KvSnapshot {
    pub hashes: Vec<BlockHash>,
    pub events: broadcast::Receiver<KvEvent>,
}

/// A cheap, cloneable handle to the engine thread.
#[derive(Clone)]
pub struct EngineHandle {
    commands: std::sync::mpsc::Sender<Command>,
    next_id: Arc<AtomicU64>,
    stats: Arc<Mutex<EngineStats>>,
    kv_events: broadcast::Sender<KvEvent>,
    alive: Arc<AtomicBool>,
    guidance: Arc<GuidanceCompiler>,
}

impl EngineHandle {
    /// Starts the engine thread.
    pub fn spawn(core: EngineCore, tokenizer: Arc<Tokenizer>) -> Self {
        Self::spawn_with_loader(core, tokenizer, None)
    }

    /// Starts the engine thread of a decode worker: requests with remote
    /// prompt KV are pulled through `loader` (without one they are computed
    /// here).
    pub fn spawn_with_loader(
        mut core: EngineCore,
        tokenizer: Arc<Tokenizer>,
        loader: Option<Arc<dyn KvLoader>>,
    ) -> Self {
        let guidance = match core.guidance() {
            Some(g) => g.clone(),
            None => {
                let g = Arc::new(GuidanceCompiler::new(
                    tokenizer.clone(),
                    core.runner().config().vocab_size,
                    core.eos_token_ids(),
                ));
                core.set_guidance(g.clone());
                g
            }
        };
        let (commands, rx) = std::sync::mpsc::channel();
        let stats = Arc::new(Mutex::new(core.stats()));
        let (kv_events, _) = broadcast::channel(4096);
        let worker = thread::EngineThread::new(
            core,
            tokenizer,
            rx,
            stats.clone(),
            kv_events.clone(),
            loader,
        );
        let alive = Arc::new(AtomicBool::new(true));
        let flag = thread::AliveFlag(alive.clone());
        std::thread::Builder::new()
            .name("tandem-engine".into())
            .spawn(move || {
                let _flag = flag; // cleared when the thread ends, panics included
                worker.run()
            })
            .expect("spawning the engine thread");
        EngineHandle {
            commands,
            next_id: Arc::new(AtomicU64::new(0)),
            stats,
            kv_events,
            alive,
            guidance,
        }
    }

    /// The engine's grammar compiler: compiling a request's constraint
    /// with it before [`Self::add_request`] (on a blocking thread) both
    /// checks it and keeps the compile off the engine thread.
    pub fn guidance(&self) -> &Arc<GuidanceCompiler> {
        &self.guidance
    }

    /// Submits a request; its updates arrive on the returned stream.
    /// Dropping the stream before it finishes aborts the request.
    pub fn add_request(&self, request: ServingRequest) -> RequestStream {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        let sent = self.commands.send(Command::Add {
            id,
            request: Box::new(request),
            tx: tx.clone(),
            arrival: std::time::Instant::now(),
        });
        if sent.is_err() {
            let _ = tx.send(Err(ServingError::Shutdown));
        }
        RequestStream::new(id, rx, self.commands.clone())
    }

    pub fn abort(&self, id: SeqId) {
        let _ = self.commands.send(Command::Abort(id));
    }

    /// Whether the engine thread is still running (false after a panic or
    /// shutdown): health checks report it.
    pub fn is_alive(&self) -> bool {
        self.alive.load(Ordering::Acquire)
    }

    /// Load as of the last step.
    pub fn stats(&self) -> EngineStats {
        *self.stats.lock()
    }

    /// Prefix-cache changes from now on.
    pub fn subscribe_kv_events(&self) -> broadcast::Receiver<KvEvent> {
        self.kv_events.subscribe()
    }

    /// Frees a prefill lease's blocks (decode pulled them, or gave up).
    pub fn release_lease(&self, lease: u64) {
        let _ = self.commands.send(Command::ReleaseLease(lease));
    }

    /// The prefix cache's hashes now plus a subscription to what changes
    /// after, with nothing lost in between; `None` once the engine is gone.
    pub async fn kv_snapshot(&self) -> Option<KvSnapshot> {
        let (tx, rx) = tokio::sync::oneshot::channel();
        self.commands.send(Command::SnapshotKv(tx)).ok()?;
        rx.await.ok()
    }

    /// Stops the engine thread; requests still running get `Shutdown`.
    pub fn shutdown(&self) {
        let _ = self.commands.send(Command::Shutdown);
    }
}
