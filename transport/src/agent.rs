//! The agent: one per worker. It owns the backend, the registered KV
//! region and the peers it knows, and turns `read` calls into validated,
//! coalesced transfers.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use parking_lot::Mutex;

use crate::backend::loopback::LoopbackBackend;
use crate::backend::{Backend, Connection, Identity, ReadRequest, Transfer};
use crate::coalesce::coalesce;
use crate::completion::{Completion, Finisher, ReadHandle};
use crate::error::{Result, TransportError};
use crate::metadata::{AgentMetadata, MemoryKind, RegionInfo};
use crate::notify::{self, Inbox, Notifications, MAX_NOTIFY};
use crate::region::{check_geometry, AllocatedRegion, MemoryDescriptor, Region, RegionMemory};
use crate::staging::Staging;
use crate::ucx::{UcxBackend, UcxConfig};

/// Default deadline of a read; `read_with_timeout` overrides it.
pub const DEFAULT_READ_TIMEOUT: Duration = Duration::from_secs(10);

/// Which backend an agent runs.
#[derive(Debug, Clone)]
pub enum BackendConfig {
    /// In-process memcpy between agents of one process (unit tests).
    Loopback,
    /// UCX over the system library.
    Ucx(UcxConfig),
}

impl BackendConfig {
    /// Starts the backend for the agent `me`.
    fn build(&self, me: Identity) -> Result<Box<dyn Backend>> {
        Ok(match self {
            BackendConfig::Loopback => Box::new(LoopbackBackend::new(me)),
            BackendConfig::Ucx(config) => Box::new(UcxBackend::start(config, me)?),
        })
    }
}

/// A peer loaded with `add_remote`, pinned to the incarnation it came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RemoteAgent {
    name: String,
    epoch: u64,
}

impl RemoteAgent {
    /// The peer's agent name.
    pub fn name(&self) -> &str {
        &self.name
    }
    /// The peer's epoch when its metadata was loaded.
    pub fn epoch(&self) -> u64 {
        self.epoch
    }
}

struct Local {
    region: Region,
    desc: MemoryDescriptor,
    rkey: Vec<u8>,
    staging: Option<Arc<Staging>>,
}

struct Peer {
    meta: AgentMetadata,
    conn: Arc<dyn Connection>,
}

/// A NIXL-style transfer agent.
pub struct Agent {
    name: String,
    epoch: u64,
    inbox: Arc<Inbox>,
    peers: Mutex<HashMap<String, Peer>>,
    read_timeout: Duration,
    /// Stopped after the peers' connections are closed (see `Drop`) and
    /// before `local` (a staging buffer must outlive its registration).
    backend: Box<dyn Backend>,
    local: Mutex<Option<Local>>,
}

/// A new incarnation id: wall-clock nanoseconds, so an agent restarted on
/// the same host always has a larger epoch than its predecessor.
fn new_epoch() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(1)
}

impl Agent {
    /// Starts an agent named `name` (unique among the workers that talk to
    /// each other) on `backend`.
    pub fn new(name: &str, backend: BackendConfig) -> Result<Agent> {
        if name.is_empty() || name.len() > crate::metadata::MAX_NAME {
            return Err(TransportError::InvalidName(name.to_owned()));
        }
        let epoch = new_epoch();
        let inbox = Arc::new(Inbox::default());
        let me = Identity {
            name: name.to_owned(),
            epoch,
            inbox: inbox.clone(),
        };
        let backend = backend.build(me)?;
        tracing::info!(
            agent = name,
            epoch,
            backend = backend.kind().name(),
            "transfer agent started"
        );
        Ok(Agent {
            name: name.to_owned(),
            epoch,
            inbox,
            peers: Mutex::new(HashMap::new()),
            read_timeout: DEFAULT_READ_TIMEOUT,
            backend,
            local: Mutex::new(None),
        })
    }

    /// Sets the deadline `read` uses.
    pub fn with_read_timeout(mut self, timeout: Duration) -> Agent {
        self.read_timeout = timeout;
        self
    }

    /// This agent's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// This agent's incarnation id.
    pub fn epoch(&self) -> u64 {
        self.epoch
    }

    /// Registers the KV arena (one per agent). CUDA regions are registered
    /// as device memory when the backend supports it, else through a pinned
    /// host staging buffer (see `MemoryDescriptor::host_staged`).
    pub fn register(&self, region: Region) -> Result<MemoryDescriptor> {
        let mut local = self.local.lock();
        if local.is_some() {
            return Err(TransportError::AlreadyRegistered(self.name.clone()));
        }
        let staging = Staging::choose(&region, self.backend.supports_cuda())?;
        let (base, memory) = match &staging {
            Some(s) => (s.host_base(), MemoryKind::Host),
            None => (region.base, memory_kind(region.memory)),
        };
        let rkey = self.backend.register(base, region.len(), memory)?;
        let desc = MemoryDescriptor {
            base_addr: base,
            block_bytes: region.block_bytes,
            num_blocks: region.num_blocks,
            memory,
            host_staged: staging.is_some(),
        };
        *local = Some(Local {
            region,
            desc: desc.clone(),
            rkey,
            staging: staging.map(Arc::new),
        });
        Ok(desc)
    }

    /// Allocates the KV arena through the backend and registers it (instead
    /// of `register`; one region per agent). The memory is zeroed by nobody:
    /// fill it before use. It is freed when the agent is dropped.
    ///
    /// Why: UCX 1.13 (Debian) cannot read *user* memory one-sidedly over
    /// shared memory — its RMA lanes need transports with buffered copies
    /// (posix/sysv), which only reach memory they allocated themselves, so
    /// `ucp_get` of registered user memory is emulated with messages that
    /// the owner's progress thread must answer. Memory UCX allocated lives
    /// in a shared segment a same-host peer maps: a read is one memcpy done
    /// by the reader. Over TCP it makes no difference.
    pub fn allocate_region(
        &self,
        block_bytes: usize,
        num_blocks: u32,
        layout: crate::LayoutDescriptor,
    ) -> Result<AllocatedRegion> {
        let len = check_geometry(block_bytes, num_blocks, &layout)?;
        let mut local = self.local.lock();
        if local.is_some() {
            return Err(TransportError::AlreadyRegistered(self.name.clone()));
        }
        let (base, rkey) = self.backend.allocate(len)?;
        let desc = MemoryDescriptor {
            base_addr: base,
            block_bytes: block_bytes as u64,
            num_blocks,
            memory: MemoryKind::Host,
            host_staged: false,
        };
        let region = Region {
            base,
            block_bytes: block_bytes as u64,
            num_blocks,
            layout,
            memory: RegionMemory::Host,
        };
        *local = Some(Local {
            region,
            desc: desc.clone(),
            rkey,
            staging: None,
        });
        Ok(AllocatedRegion {
            base: base as *mut u8,
            len: len as usize,
            desc,
        })
    }

    /// Makes blocks readable by peers. Only the host-staged CUDA path needs
    /// it (device → pinned host copy); for host or direct device memory it
    /// does nothing. Call when the blocks are final, before handing them out.
    pub fn publish_blocks(&self, blocks: &[u32]) -> Result<()> {
        let local = self.local.lock();
        let l = local
            .as_ref()
            .ok_or_else(|| TransportError::NoLocalRegion(self.name.clone()))?;
        match &l.staging {
            None => Ok(()),
            Some(s) => {
                let runs = coalesce(
                    &blocks.iter().map(|&b| (b, b)).collect::<Vec<_>>(),
                    l.region.num_blocks,
                    l.region.num_blocks,
                )?;
                s.to_host(&runs, l.region.block_bytes)
            }
        }
    }

    /// This agent's metadata, for peers' `add_remote`.
    pub fn metadata(&self) -> Vec<u8> {
        let local = self.local.lock();
        let region = local.as_ref().map(|l| RegionInfo {
            base_addr: l.desc.base_addr,
            block_bytes: l.desc.block_bytes,
            num_blocks: l.desc.num_blocks,
            memory: l.desc.memory,
            layout: l.region.layout.clone(),
            rkey: l.rkey.clone(),
        });
        AgentMetadata {
            name: self.name.clone(),
            epoch: self.epoch,
            pid: std::process::id(),
            host_id: crate::liveness::host_id(),
            backend: self.backend.kind(),
            worker_address: self.backend.worker_address(),
            region,
        }
        .to_bytes()
    }

    /// Loads a peer's metadata. Refuses damaged bytes, another backend, a
    /// different KV layout (naming the field), and metadata older than what
    /// is known for that peer. Newer metadata replaces the old connection
    /// (the peer restarted).
    pub fn add_remote(&self, bytes: &[u8]) -> Result<RemoteAgent> {
        let meta = AgentMetadata::from_bytes(bytes)?;
        if meta.backend != self.backend.kind() {
            return Err(TransportError::BackendMismatch {
                peer: meta.name,
                local: self.backend.kind().name(),
                remote: meta.backend.name(),
            });
        }
        if let (Some(l), Some(r)) = (self.local.lock().as_ref(), meta.region.as_ref()) {
            check_compatible(&l.region, r)?;
        }
        let handle = RemoteAgent {
            name: meta.name.clone(),
            epoch: meta.epoch,
        };
        let mut peers = self.peers.lock();
        if let Some(known) = peers.get(&meta.name) {
            if meta.epoch < known.meta.epoch {
                return Err(TransportError::StaleEpoch {
                    agent: meta.name,
                    offered: meta.epoch,
                    known: known.meta.epoch,
                });
            }
            if meta.epoch == known.meta.epoch && known.conn.failure().is_none() {
                return Ok(handle);
            }
        }
        if meta.region.is_none() {
            return Err(TransportError::RemoteHasNoRegion(meta.name));
        }
        let conn = self.backend.connect(&meta)?;
        tracing::info!(agent = %self.name, peer = %meta.name, epoch = meta.epoch, "peer loaded");
        peers.insert(meta.name.clone(), Peer { meta, conn });
        Ok(handle)
    }

    /// Reads `pairs` of (remote block, local block) from `remote` with the
    /// agent's default deadline, then sends `notify` to the peer.
    pub fn read(
        &self,
        remote: &RemoteAgent,
        pairs: &[(u32, u32)],
        notify: Option<&[u8]>,
    ) -> Result<ReadHandle> {
        self.read_with_timeout(remote, pairs, notify, self.read_timeout)
    }

    /// `read` with an explicit deadline. Everything that can be checked
    /// locally (epoch, layout, ranges, duplicates, notify size) is checked
    /// before any transfer starts; errors after that arrive on the handle.
    pub fn read_with_timeout(
        &self,
        remote: &RemoteAgent,
        pairs: &[(u32, u32)],
        notify: Option<&[u8]>,
        timeout: Duration,
    ) -> Result<ReadHandle> {
        if let Some(n) = notify {
            if n.len() > MAX_NOTIFY {
                return Err(TransportError::NotifyTooLarge {
                    len: n.len(),
                    max: MAX_NOTIFY,
                });
            }
        }
        let (conn, info) = self.peer(remote)?;
        let local = self.local.lock();
        let l = local
            .as_ref()
            .ok_or_else(|| TransportError::NoLocalRegion(self.name.clone()))?;
        check_compatible(&l.region, &info)?;
        let runs = coalesce(pairs, info.num_blocks, l.region.num_blocks)?;
        let bb = l.region.block_bytes;
        let transfers: Vec<Transfer> = runs
            .iter()
            .map(|r| Transfer {
                local: l.desc.base_addr + u64::from(r.local) * bb,
                remote: info.base_addr + u64::from(r.remote) * bb,
                len: u64::from(r.len) * bb,
            })
            .collect();
        let finisher = l
            .staging
            .clone()
            .map(|s| -> Finisher { Box::new(move || s.to_device(&runs, bb)) });
        drop(local);
        let completion = Completion::new(finisher);
        let notify = notify.map(|n| notify::encode(&self.name, self.epoch, remote.epoch, n));
        conn.read(ReadRequest {
            transfers,
            notify,
            deadline: Instant::now() + timeout,
            completion: completion.clone(),
        });
        Ok(ReadHandle::new(completion, remote.name.clone(), timeout))
    }

    fn peer(&self, remote: &RemoteAgent) -> Result<(Arc<dyn Connection>, RegionInfo)> {
        let peers = self.peers.lock();
        let p = peers
            .get(&remote.name)
            .ok_or_else(|| TransportError::UnknownRemote(remote.name.clone()))?;
        if p.meta.epoch != remote.epoch {
            return Err(TransportError::StaleEpoch {
                agent: remote.name.clone(),
                offered: remote.epoch,
                known: p.meta.epoch,
            });
        }
        if let Some(detail) = p.conn.failure() {
            return Err(TransportError::PeerFailed {
                peer: remote.name.clone(),
                detail,
            });
        }
        let info = p
            .meta
            .region
            .clone()
            .ok_or_else(|| TransportError::RemoteHasNoRegion(remote.name.clone()))?;
        Ok((p.conn.clone(), info))
    }

    /// Forgets a peer and closes its connection.
    pub fn remove_remote(&self, remote: &RemoteAgent) {
        self.peers.lock().remove(&remote.name);
    }

    /// Notifications sent to this agent by readers.
    pub fn notifications(&self) -> Notifications {
        Notifications {
            inbox: self.inbox.clone(),
        }
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        // Close connections before the backend stops.
        self.peers.lock().clear();
    }
}

fn memory_kind(m: RegionMemory) -> MemoryKind {
    match m {
        RegionMemory::Host => MemoryKind::Host,
        #[cfg(feature = "cuda")]
        RegionMemory::Cuda { .. } => MemoryKind::Cuda,
    }
}

/// Same layout, and the same block size in bytes (which a custom dtype
/// string could otherwise hide).
fn check_compatible(local: &Region, remote: &RegionInfo) -> Result<()> {
    local.layout.check_matches(&remote.layout)?;
    if local.block_bytes != remote.block_bytes {
        return Err(TransportError::LayoutMismatch {
            field: "block_bytes",
            local: local.block_bytes.to_string(),
            remote: remote.block_bytes.to_string(),
        });
    }
    Ok(())
}
