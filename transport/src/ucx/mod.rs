//! UCX backend. One UCP context and worker per agent, owned by a progress
//! thread that is the only thread touching UCX: other threads hand it
//! commands through a queue and a condition variable. That lets the worker
//! run in `UCS_THREAD_MODE_SINGLE`, with no locks on the data path.

mod config;
mod ops;
mod progress;
mod queue;
mod status;
mod worker;

use std::sync::mpsc::{sync_channel, Receiver};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

pub use config::UcxConfig;
use queue::{Command, ConnShared, Shared};

use crate::backend::{Backend, Connection, Identity, ReadRequest};
use crate::error::{Result, TransportError};
use crate::metadata::{AgentMetadata, BackendKind, MemoryKind};

/// Longest a control call (start, register, connect) waits for the progress thread.
const CONTROL_TIMEOUT: Duration = Duration::from_secs(10);

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
        let shared = Arc::new(Shared::new());
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
        self.shared.stop();
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

    fn read(&self, read: ReadRequest) {
        if self.shared.stopped() {
            read.completion
                .complete(Err(TransportError::ShutDown(self.agent.clone())));
            return;
        }
        self.shared.submit(Command::Read {
            conn: self.id,
            read,
        });
    }
}

impl Drop for UcxConnection {
    fn drop(&mut self) {
        self.shared.submit(Command::Disconnect { conn: self.id });
    }
}
