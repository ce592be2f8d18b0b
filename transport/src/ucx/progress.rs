//! The progress thread: executes commands, drives UCX, completes reads and
//! enforces their deadlines. It spins while work is in flight or was seen
//! in the last few milliseconds (over TCP a peer's gets are served by our
//! progress), and otherwise naps a millisecond at a time, woken early by
//! commands: an idle agent costs ~1000 wake-ups a second, and the first
//! request after an idle spell waits at most a millisecond.

use std::collections::HashMap;
use std::sync::mpsc::SyncSender;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::config::UcxConfig;
use super::ops::Phase;
use super::queue::{Command, Shared};
use super::worker::{AmTarget, Worker};
use crate::backend::Identity;
use crate::error::{Result, TransportError};

/// How long the thread keeps spinning after the last activity.
const SPIN_AFTER_ACTIVITY: Duration = Duration::from_millis(5);
/// One idle nap.
const NAP: Duration = Duration::from_millis(1);

mod connections;
mod reads;
mod state;

use state::{Memory, Progress};

/// Thread body: sets up UCX, reports (address, CUDA support) or the setup
/// error on `started`, then runs until the backend is dropped.
pub(crate) fn run(
    config: &UcxConfig,
    me: Identity,
    shared: Arc<Shared>,
    started: SyncSender<Result<(Vec<u8>, bool)>>,
) {
    let target = AmTarget {
        inbox: me.inbox,
        epoch: me.epoch,
    };
    let w = match Worker::new(config, target) {
        Ok(w) => w,
        Err(e) => {
            let _ = started.send(Err(e));
            return;
        }
    };
    let _ = started.send(Ok((w.address.clone(), w.cuda)));
    let mut p = Progress {
        shared,
        name: me.name,
        w,
        mems: Vec::new(),
        conns: HashMap::new(),
        next_conn: 1,
        ops: Vec::new(),
        abandoned: Vec::new(),
        closing: Vec::new(),
        last_liveness: Instant::now(),
    };
    p.run();
    p.shutdown();
}

impl Progress {
    fn run(&mut self) {
        let mut last_activity = Instant::now();
        while !self.shared.stopped() {
            let commands = self.shared.take_commands();
            let busy = !commands.is_empty();
            for c in commands {
                self.execute(c);
            }
            let mut events = 0;
            loop {
                let n = self.w.progress();
                if n == 0 {
                    break;
                }
                events += n;
            }
            let now = Instant::now();
            self.check_connections(now);
            self.advance_reads(now);
            self.advance_closes(now);
            if busy || events > 0 {
                last_activity = now;
            }
            if !self.ops.is_empty() || now.duration_since(last_activity) < SPIN_AFTER_ACTIVITY {
                // Yield rather than spin: on a small machine the thread
                // waiting for our completion (or the peer's progress thread)
                // may need this core, and a pure spin delays it by a tick.
                std::thread::yield_now();
                continue;
            }
            self.shared.nap(NAP);
        }
    }

    fn execute(&mut self, cmd: Command) {
        match cmd {
            Command::Register {
                base,
                len,
                memory,
                reply,
            } => {
                let _ = reply.send(self.register(base, len, memory));
            }
            Command::Allocate { len, reply } => {
                let _ = reply.send(self.allocate(len));
            }
            Command::Connect {
                peer,
                address,
                rkey,
                local_pid,
                shared,
                reply,
            } => {
                let _ = reply.send(self.connect(peer, &address, &rkey, local_pid, shared));
            }
            Command::Disconnect { conn } => {
                if let Some(c) = self.conns.get_mut(&conn) {
                    c.released = true;
                }
            }
            Command::Read { conn, read } => self.start_read(conn, read),
        }
    }

    fn register(
        &mut self,
        base: u64,
        len: u64,
        memory: crate::metadata::MemoryKind,
    ) -> Result<Vec<u8>> {
        if let Some(m) = self.mems.iter().find(|m| m.base == base && m.len == len) {
            return Ok(m.rkey.clone());
        }
        let (memh, rkey) = self.w.mem_map(base, len, memory)?;
        tracing::debug!(agent = %self.name, base, len, rkey_bytes = rkey.len(), "memory registered");
        self.mems.push(Memory {
            base,
            len,
            memh,
            rkey: rkey.clone(),
        });
        Ok(rkey)
    }

    fn allocate(&mut self, len: u64) -> Result<(u64, Vec<u8>)> {
        let (memh, base, rkey) = self.w.mem_alloc(len)?;
        tracing::info!(agent = %self.name, base, len, "memory allocated by UCX");
        self.mems.push(Memory {
            base,
            len,
            memh,
            rkey: rkey.clone(),
        });
        Ok((base, rkey))
    }

    fn shutdown(&mut self) {
        for op in &mut self.ops {
            if op.phase != Phase::Abandoned {
                op.phase = Phase::Abandoned;
                op.completion
                    .complete(Err(TransportError::ShutDown(self.name.clone())));
            }
        }
        let ids: Vec<u64> = self.conns.keys().copied().collect();
        for id in ids {
            self.break_conn(id, "agent shut down".into());
        }
        self.conns.clear();
        while !self.closing.is_empty() {
            self.w.progress();
            self.advance_closes(Instant::now());
        }
        for m in self.mems.drain(..) {
            self.w.mem_unmap(m.memh);
        }
        // The worker is destroyed when `self.w` drops, before the ops whose
        // addresses its requests may still hold (field order).
    }
}
