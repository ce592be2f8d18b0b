//! What callers and the progress thread share: the queue of commands, the
//! stop flag and the wake-up of a napping thread, and each connection's
//! failure, readable from any thread.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::SyncSender;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use parking_lot::{Condvar, Mutex};

use crate::backend::ReadRequest;
use crate::error::Result;
use crate::metadata::MemoryKind;

/// Shared state of one connection, readable from any thread.
#[derive(Default)]
pub(crate) struct ConnShared {
    /// Set once, when the endpoint fails or a read on it times out.
    pub(crate) failure: OnceLock<String>,
}

/// Work for the progress thread.
pub(crate) enum Command {
    Register {
        base: u64,
        len: u64,
        memory: MemoryKind,
        reply: SyncSender<Result<Vec<u8>>>,
    },
    Allocate {
        len: u64,
        reply: SyncSender<Result<(u64, Vec<u8>)>>,
    },
    Connect {
        peer: String,
        address: Vec<u8>,
        rkey: Vec<u8>,
        /// The peer's pid if it runs on this host (for liveness checks).
        local_pid: Option<u32>,
        shared: Arc<ConnShared>,
        reply: SyncSender<Result<u64>>,
    },
    Disconnect {
        conn: u64,
    },
    Read {
        conn: u64,
        read: ReadRequest,
    },
}

/// What callers and the progress thread share.
pub(crate) struct Shared {
    queue: Mutex<VecDeque<Command>>,
    stop: AtomicBool,
    /// Wakes a napping progress thread.
    wake: Condvar,
    /// The progress thread is waiting on `wake` (written under the lock).
    napping: AtomicBool,
}

impl Shared {
    pub(crate) fn new() -> Shared {
        Shared {
            queue: Mutex::new(VecDeque::new()),
            stop: AtomicBool::new(false),
            wake: Condvar::new(),
            napping: AtomicBool::new(false),
        }
    }

    pub(crate) fn submit(&self, cmd: Command) {
        let mut q = self.queue.lock();
        q.push_back(cmd);
        // Read under the lock: the thread sets it under the lock before it
        // waits, so either it sees our command or we see it napping. A busy
        // thread is not woken (saves a syscall per read).
        let napping = self.napping.load(Ordering::Relaxed);
        drop(q);
        if napping {
            self.wake.notify_one();
        }
    }

    /// Naps up to `timeout` unless a command is queued or stop was asked.
    pub(crate) fn nap(&self, timeout: Duration) {
        let mut q = self.queue.lock();
        if q.is_empty() && !self.stop.load(Ordering::Acquire) {
            self.napping.store(true, Ordering::Relaxed);
            self.wake.wait_for(&mut q, timeout);
            self.napping.store(false, Ordering::Relaxed);
        }
    }

    pub(crate) fn take_commands(&self) -> VecDeque<Command> {
        std::mem::take(&mut *self.queue.lock())
    }

    /// Asks the progress thread to stop, waking it if it naps.
    pub(crate) fn stop(&self) {
        self.stop.store(true, Ordering::Release);
        drop(self.queue.lock()); // order the store before the wake-up
        self.wake.notify_one();
    }

    /// Whether `stop` was called.
    pub(crate) fn stopped(&self) -> bool {
        self.stop.load(Ordering::Acquire)
    }
}
