//! The engine thread: takes commands, steps the core while there is work,
//! and fans results out to the requests' channels.

use std::collections::HashMap;
use std::sync::mpsc::{Receiver, TryRecvError};
use std::sync::{Arc, Mutex};

use tokio::sync::broadcast;

use super::live::LiveRequest;
use super::request::ServingError;
use super::Command;
use crate::engine_core::{EngineCore, EngineStats};
use crate::kv_cache::KvEvent;
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
}

impl EngineThread {
    pub fn new(
        core: EngineCore,
        tokenizer: Arc<Tokenizer>,
        commands: Receiver<Command>,
        stats: Arc<Mutex<EngineStats>>,
        kv_events: broadcast::Sender<KvEvent>,
    ) -> Self {
        EngineThread {
            core,
            tokenizer,
            commands,
            stats,
            kv_events,
            live: HashMap::new(),
        }
    }

    pub fn run(mut self) {
        loop {
            // Sleep on the channel when idle; otherwise take what is queued.
            if self.live.is_empty() {
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
            if self.core.has_unfinished() {
                self.step();
            }
            self.publish();
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
                        let live = LiveRequest::new(
                            tx,
                            &prompt,
                            stop,
                            min_tokens,
                            stop_token_ids,
                            request.skip_special_tokens,
                            arrival,
                        );
                        self.live.insert(id, live);
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
            Command::Shutdown => return false,
        }
        true
    }

    fn step(&mut self) {
        let outputs = match self.core.step() {
            Ok(o) => o,
            Err(e) => {
                // A failed forward fails the requests in it, not the worker.
                tracing::error!(error = %e, "engine step failed; failing in-flight requests");
                for (id, req) in self.live.drain() {
                    self.core.finish(id, FinishReason::Abort);
                    let _ = req.tx.send(Err(ServingError::Engine(e.to_string())));
                }
                return;
            }
        };
        for out in outputs {
            let id = out.id;
            let core_finished = out.finished.is_some();
            let Some(req) = self.live.get_mut(&id) else {
                continue;
            };
            let update = req.on_token(&self.tokenizer, out);
            let (finished, delivered) = match update {
                Ok(update) => {
                    let finished = update.finish_reason.is_some();
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
                self.live.remove(&id);
            }
        }
    }

    fn publish(&mut self) {
        *self.stats.lock().expect("stats lock") = self.core.stats();
        for event in self.core.take_kv_events() {
            // Nobody listening is fine: events are advisory.
            let _ = self.kv_events.send(event);
        }
    }
}
