//! The engine thread: takes commands, steps the core while there is work,
//! and fans results out to the requests' channels.

use std::collections::HashMap;
use std::sync::mpsc::{Receiver, Sender, TryRecvError};
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use tokio::sync::broadcast;

use super::live::{LiveRequest, OutputBuilder};
use super::request::ServingError;
use super::{Command, KvSnapshot};
use crate::engine_core::{EngineCore, EngineStats};
use crate::kv_cache::KvEvent;
use crate::kv_handoff::{KvLoadDone, KvLoader};
use crate::sequence::{FinishReason, SeqId};
use crate::stop::StopMatcher;
use crate::tokenizer::Tokenizer;

/// Clears the shared liveness flag when dropped, so a panicking engine
/// thread still reports itself dead.
pub(super) struct AliveFlag(pub Arc<std::sync::atomic::AtomicBool>);

impl Drop for AliveFlag {
    fn drop(&mut self) {
        self.0.store(false, std::sync::atomic::Ordering::Release);
    }
}

pub(super) struct EngineThread {
    core: EngineCore,
    tokenizer: Arc<Tokenizer>,
    commands: Receiver<Command>,
    stats: Arc<Mutex<EngineStats>>,
    kv_events: broadcast::Sender<KvEvent>,
    live: HashMap<SeqId, LiveRequest>,
    loader: Option<Arc<dyn KvLoader>>,
    loads_done_tx: Sender<(SeqId, Result<(), String>)>,
    loads_done: Receiver<(SeqId, Result<(), String>)>,
    loads_in_flight: usize,
}

impl EngineThread {
    pub fn new(
        core: EngineCore,
        tokenizer: Arc<Tokenizer>,
        commands: Receiver<Command>,
        stats: Arc<Mutex<EngineStats>>,
        kv_events: broadcast::Sender<KvEvent>,
        loader: Option<Arc<dyn KvLoader>>,
    ) -> Self {
        let (loads_done_tx, loads_done) = std::sync::mpsc::channel();
        EngineThread {
            core,
            tokenizer,
            commands,
            stats,
            kv_events,
            live: HashMap::new(),
            loader,
            loads_done_tx,
            loads_done,
            loads_in_flight: 0,
        }
    }

    pub fn run(mut self) {
        loop {
            // Sleep on the channel when idle; otherwise take what is queued.
            if self.live.is_empty() && self.loads_in_flight == 0 {
                match self.commands.recv() {
                    Ok(cmd) => {
                        if !self.handle(cmd) {
                            break;
                        }
                    }
                    Err(_) => break,
                }
            }
            let mut open = true;
            loop {
                match self.commands.try_recv() {
                    Ok(cmd) => {
                        if !self.handle(cmd) {
                            open = false;
                            break;
                        }
                    }
                    Err(TryRecvError::Empty) => break,
                    Err(TryRecvError::Disconnected) => {
                        open = self.core.has_unfinished();
                        break;
                    }
                }
            }
            if !open {
                break;
            }
            let landed = self.finish_loads();
            let mut stepped = false;
            if self.core.has_unfinished() {
                stepped = self.step();
            }
            self.start_loads();
            self.publish();
            if !stepped && !landed && self.loads_in_flight > 0 {
                // Only pulls are pending: wait for them without spinning.
                std::thread::sleep(Duration::from_micros(200));
            }
        }
        for (_, req) in self.live.drain() {
            let _ = req.tx.send(Err(ServingError::Shutdown));
        }
    }

    /// Applies one command; false means shut down.
    fn handle(&mut self, cmd: Command) -> bool {
        match cmd {
            Command::Add {
                id,
                request,
                tx,
                arrival,
            } => {
                let request = *request;
                let stop = match StopMatcher::new(
                    request.stop_strings,
                    request.include_stop_str_in_output,
                ) {
                    Ok(s) => s,
                    Err(e) => {
                        let _ = tx.send(Err(ServingError::Rejected(e.to_string())));
                        return true;
                    }
                };
                let prompt = request.request.prompt_tokens.clone();
                let min_tokens = request.request.stop.min_tokens;
                let stop_token_ids = request.request.stop.stop_token_ids.clone();
                match self.core.add_request(id, request.request) {
                    Ok(()) => {
                        let out = OutputBuilder::new(
                            &prompt,
                            stop,
                            min_tokens,
                            stop_token_ids,
                            request.skip_special_tokens,
                            arrival,
                        );
                        self.live.insert(id, LiveRequest { tx, out });
                    }
                    Err(e) => {
                        let _ = tx.send(Err(ServingError::Rejected(e.to_string())));
                    }
                }
            }
            Command::Abort(id) => {
                self.core.finish(id, FinishReason::Abort);
                self.live.remove(&id);
            }
            Command::ReleaseLease(lease) => {
                if !self.core.release_lease(lease) {
                    tracing::debug!(lease, "KV lease already released");
                }
            }
            Command::SnapshotKv(reply) => {
                // Subscribed before the snapshot, with no step in between,
                // so the subscriber misses nothing.
                let rx = self.kv_events.subscribe();
                let _ = reply.send(KvSnapshot {
                    hashes: self.core.cached_block_hashes(),
                    events: rx,
                });
            }
            Command::Shutdown => return false,
        }
        true
    }

    /// Hands the scheduler's new pulls to the loader (none: compute here).
    fn start_loads(&mut self) {
        for load in self.core.take_kv_loads() {
            let id = load.seq;
            match &self.loader {
                Some(loader) => {
                    self.loads_in_flight += 1;
                    loader.start(load, KvLoadDone::new(id, self.loads_done_tx.clone()));
                }
                None => self
                    .core
                    .kv_loaded(id, Err("this engine has no KV loader".into())),
            }
        }
    }

    /// Applies finished pulls; true when any landed.
    fn finish_loads(&mut self) -> bool {
        let mut any = false;
        while let Ok((id, outcome)) = self.loads_done.try_recv() {
            self.loads_in_flight -= 1;
            any = true;
            self.core.kv_loaded(id, outcome);
        }
        any
    }

    /// One engine step; false when nothing could run.
    fn step(&mut self) -> bool {
        let outputs = match self.core.step() {
            Ok(o) => o,
            Err(e) => {
                // A failed forward fails the requests in it, not the worker.
                tracing::error!(error = %e, "engine step failed; failing in-flight requests");
                for (id, req) in self.live.drain() {
                    self.core.finish(id, FinishReason::Abort);
                    let _ = req.tx.send(Err(ServingError::Engine(e.to_string())));
                }
                return true;
            }
        };
        let stepped = !outputs.is_empty();
        for out in outputs {
            let id = out.id;
            // Finished in the core, or detached into a lease.
            let core_finished = out.finished.is_some() || out.handoff.is_some();
            let lease = out.handoff.as_ref().map(|h| h.lease);
            let Some(req) = self.live.get_mut(&id) else {
                continue;
            };
            let update = req.out.on_step(&self.tokenizer, out);
            let (finished, delivered) = match update {
                Ok(update) => {
                    let finished = update.finish_reason.is_some() || update.kv_handoff.is_some();
                    (finished, req.tx.send(Ok(update)).is_ok())
                }
                Err(e) => (
                    true,
                    req.tx
                        .send(Err(ServingError::Engine(e.to_string())))
                        .is_ok(),
                ),
            };
            if finished || !delivered {
                // Stop strings and vanished receivers end the request here.
                if !core_finished {
                    self.core.finish(id, FinishReason::Abort);
                }
                // A lease nobody received would never expire: free it now.
                if let (Some(lease), false) = (lease, delivered) {
                    self.core.release_lease(lease);
                }
                self.live.remove(&id);
            }
        }
        stepped
    }

    fn publish(&mut self) {
        *self.stats.lock() = self.core.stats();
        for event in self.core.take_kv_events() {
            // Nobody listening is fine: events are advisory.
            let _ = self.kv_events.send(event);
        }
    }
}
