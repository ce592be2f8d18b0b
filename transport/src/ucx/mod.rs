//! UCX backend. One UCP context and worker per agent, owned by a progress
//! thread that is the only thread touching UCX: other threads hand it
//! commands through a queue and a condition variable. That lets the worker
//! run in `UCS_THREAD_MODE_SINGLE`, with no locks on the data path.

mod ops;
mod progress;
mod status;
mod worker;

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{sync_channel, Receiver, SyncSender};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::backend::{Backend, Connection, Identity, Transfer};
use crate::completion::Completion;
use crate::error::{Result, TransportError};
use crate::metadata::{AgentMetadata, BackendKind, MemoryKind};

/// Longest a control call (start, register, connect) waits for the progress thread.
const CONTROL_TIMEOUT: Duration = Duration::from_secs(10);

/// UCX settings of one agent. `None` leaves the choice to UCX (and its
/// `UCX_*` environment variables).
#[derive(Debug, Clone, Default)]
pub struct UcxConfig {
    /// Transports (`UCX_TLS`), e.g. `"tcp"` or `"posix,sysv,cma"`.
    pub transports: Option<String>,
    /// Network devices (`UCX_NET_DEVICES`), e.g. `"lo"`.
    pub net_devices: Option<String>,
}

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
        transfers: Vec<Transfer>,
        notify: Option<Vec<u8>>,
        deadline: Instant,
        completion: Arc<Completion>,
    },
}

/// What callers and the progress thread share.
pub(crate) struct Shared {
    queue: Mutex<VecDeque<Command>>,
    stop: AtomicBool,
    /// Wakes a napping progress thread.
    wake: std::sync::Condvar,
    /// The progress thread is waiting on `wake` (written under the lock).
    napping: AtomicBool,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, VecDeque<Command>> {
        self.queue.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn submit(&self, cmd: Command) {
        let mut q = self.lock();
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
        let q = self.lock();
        if q.is_empty() && !self.stop.load(Ordering::Acquire) {
            self.napping.store(true, Ordering::Relaxed);
            let q = self.wake.wait_timeout(q, timeout);
            self.napping.store(false, Ordering::Relaxed);
            drop(q);
        }
    }

    pub(crate) fn take_commands(&self) -> VecDeque<Command> {
        std::mem::take(&mut *self.lock())
    }
}

fn wait_reply<T>(rx: Receiver<Result<T>>, name: &str) -> Result<T> {
    rx.recv_timeout(CONTROL_TIMEOUT)
        .map_err(|_| TransportError::ShutDown(name.to_owned()))?
}

/// The backend handle the agent holds.
pub(crate) struct UcxBackend {
    name: String,
    shared: Arc<Shared>,
    address: Vec<u8>,
    cuda: bool,
    thread: Option<JoinHandle<()>>,
}

impl UcxBackend {
    pub(crate) fn start(config: &UcxConfig, me: Identity) -> Result<UcxBackend> {
        let shared = Arc::new(Shared {
            queue: Mutex::new(VecDeque::new()),
            stop: AtomicBool::new(false),
            wake: std::sync::Condvar::new(),
            napping: AtomicBool::new(false),
        });
        let (tx, rx) = sync_channel(1);
        let name = me.name.clone();
        let (config, thread_shared) = (config.clone(), shared.clone());
        let thread = std::thread::Builder::new()
            .name(format!("ucx-{}", me.name))
            .spawn(move || progress::run(&config, me, thread_shared, tx))
            .map_err(|e| TransportError::Ucx {
                call: "spawn progress thread",
                status: e.to_string(),
            })?;
        let (address, cuda) = match rx.recv_timeout(CONTROL_TIMEOUT) {
            Ok(Ok(v)) => v,
            Ok(Err(e)) => {
                let _ = thread.join();
                return Err(e);
            }
            Err(_) => return Err(TransportError::ShutDown(name)),
        };
        tracing::info!(agent = %name, cuda_memory = cuda, "UCX worker started");
        Ok(UcxBackend {
            name,
            shared,
            address,
            cuda,
            thread: Some(thread),
        })
    }
}

impl Drop for UcxBackend {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::Release);
        drop(self.shared.lock()); // order the store before the wake-up
        self.shared.wake.notify_one();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Backend for UcxBackend {
    fn kind(&self) -> BackendKind {
        BackendKind::Ucx
    }

    fn worker_address(&self) -> Vec<u8> {
        self.address.clone()
    }

    fn supports_cuda(&self) -> bool {
        self.cuda
    }

    fn register(&self, base: u64, len: u64, memory: MemoryKind) -> Result<Vec<u8>> {
        let (reply, rx) = sync_channel(1);
        self.shared.submit(Command::Register {
            base,
            len,
            memory,
            reply,
        });
        wait_reply(rx, &self.name)
    }

    fn allocate(&self, len: u64) -> Result<(u64, Vec<u8>)> {
        let (reply, rx) = sync_channel(1);
        self.shared.submit(Command::Allocate { len, reply });
        wait_reply(rx, &self.name)
    }

    fn connect(&self, peer: &AgentMetadata) -> Result<Arc<dyn Connection>> {
        let rkey = peer
            .region
            .as_ref()
            .map(|r| r.rkey.clone())
            .ok_or_else(|| TransportError::RemoteHasNoRegion(peer.name.clone()))?;
        let conn_shared = Arc::new(ConnShared::default());
        let (reply, rx) = sync_channel(1);
        self.shared.submit(Command::Connect {
            peer: peer.name.clone(),
            address: peer.worker_address.clone(),
            rkey,
            local_pid: (peer.host_id != 0 && peer.host_id == crate::liveness::host_id())
                .then_some(peer.pid),
            shared: conn_shared.clone(),
            reply,
        });
        let id = wait_reply(rx, &self.name)?;
        Ok(Arc::new(UcxConnection {
            id,
            shared: self.shared.clone(),
            state: conn_shared,
            agent: self.name.clone(),
        }))
    }
}

struct UcxConnection {
    id: u64,
    shared: Arc<Shared>,
    state: Arc<ConnShared>,
    agent: String,
}

impl Connection for UcxConnection {
    fn failure(&self) -> Option<String> {
        self.state.failure.get().cloned()
    }

    fn read(
        &self,
        transfers: Vec<Transfer>,
        notify: Option<Vec<u8>>,
        deadline: Instant,
        completion: Arc<Completion>,
    ) {
        if self.shared.stop.load(Ordering::Acquire) {
            completion.complete(Err(TransportError::ShutDown(self.agent.clone())));
            return;
        }
        self.shared.submit(Command::Read {
            conn: self.id,
            transfers,
            notify,
            deadline,
            completion,
        });
    }
}

impl Drop for UcxConnection {
    fn drop(&mut self) {
        self.shared.submit(Command::Disconnect { conn: self.id });
    }
}
