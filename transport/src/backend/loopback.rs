//! In-process backend: "remote" memory is another agent of this process and
//! a read is a memcpy. It exercises the agent's validation, coalescing,
//! epochs and notifications without UCX or a second process.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Weak};

use parking_lot::{Mutex, RwLock};

use super::{Backend, Connection, Identity, ReadRequest, Transfer};
use crate::completion::ReadDone;
use crate::error::{Result, TransportError};
use crate::metadata::{AgentMetadata, BackendKind, MemoryKind};
use crate::notify::Inbox;

/// Agents of this process by loopback address.
static REGISTRY: Mutex<Vec<(u64, Weak<Peer>)>> = Mutex::new(Vec::new());
static NEXT_ID: AtomicU64 = AtomicU64::new(1);

struct Peer {
    name: String,
    epoch: u64,
    inbox: Arc<Inbox>,
    /// (base, len) of the registered region. Reads hold the read lock while
    /// copying; dropping the agent takes the write lock, so no copy touches
    /// the memory after its owner may free it.
    region: RwLock<Option<(u64, u64)>>,
}

pub(crate) struct LoopbackBackend {
    id: u64,
    me: Arc<Peer>,
    /// Memory handed out by `allocate`, freed after the region is cleared.
    owned: Mutex<Vec<Box<[u64]>>>,
}

impl LoopbackBackend {
    pub(crate) fn new(id: Identity) -> Self {
        let me = Arc::new(Peer {
            name: id.name,
            epoch: id.epoch,
            inbox: id.inbox,
            region: RwLock::new(None),
        });
        let nid = NEXT_ID.fetch_add(1, Ordering::Relaxed);
        let mut reg = REGISTRY.lock();
        reg.retain(|(_, w)| w.strong_count() > 0);
        reg.push((nid, Arc::downgrade(&me)));
        LoopbackBackend {
            id: nid,
            me,
            owned: Mutex::new(Vec::new()),
        }
    }
}

impl Drop for LoopbackBackend {
    fn drop(&mut self) {
        *self.me.region.write() = None;
        let mut reg = REGISTRY.lock();
        reg.retain(|(id, _)| *id != self.id);
    }
}

impl Backend for LoopbackBackend {
    fn kind(&self) -> BackendKind {
        BackendKind::Loopback
    }

    fn worker_address(&self) -> Vec<u8> {
        self.id.to_le_bytes().to_vec()
    }

    fn supports_cuda(&self) -> bool {
        false
    }

    fn register(&self, base: u64, len: u64, memory: MemoryKind) -> Result<Vec<u8>> {
        if memory != MemoryKind::Host {
            return Err(TransportError::InvalidRegion(
                "the loopback backend copies host memory only".into(),
            ));
        }
        *self.me.region.write() = Some((base, len));
        Ok(Vec::new())
    }

    fn allocate(&self, len: u64) -> Result<(u64, Vec<u8>)> {
        let words = usize::try_from(len.div_ceil(8))
            .map_err(|_| TransportError::InvalidRegion(format!("{len} bytes do not fit")))?;
        let mut mem = vec![0u64; words].into_boxed_slice();
        let base = mem.as_mut_ptr() as u64;
        self.owned.lock().push(mem);
        let rkey = self.register(base, len, MemoryKind::Host)?;
        Ok((base, rkey))
    }

    fn connect(&self, peer: &AgentMetadata) -> Result<Arc<dyn Connection>> {
        let failed = |detail: &str| TransportError::PeerFailed {
            peer: peer.name.clone(),
            detail: detail.into(),
        };
        let id = <[u8; 8]>::try_from(peer.worker_address.as_slice())
            .map(u64::from_le_bytes)
            .map_err(|_| failed("loopback address is not 8 bytes"))?;
        let reg = REGISTRY.lock();
        let target = reg
            .iter()
            .find(|(i, _)| *i == id)
            .map(|(_, w)| w.clone())
            .filter(|w| w.strong_count() > 0)
            .ok_or_else(|| failed("no live loopback agent with that address in this process"))?;
        Ok(Arc::new(LoopbackConnection {
            peer: peer.name.clone(),
            target,
        }))
    }
}

struct LoopbackConnection {
    peer: String,
    target: Weak<Peer>,
}

impl LoopbackConnection {
    fn copy(&self, transfers: &[Transfer], notify: Option<Vec<u8>>) -> Result<ReadDone> {
        let gone = || TransportError::PeerFailed {
            peer: self.peer.clone(),
            detail: "the agent was dropped".into(),
        };
        let target = self.target.upgrade().ok_or_else(gone)?;
        let region = target.region.read();
        let (base, len) = region.ok_or_else(gone)?;
        let mut bytes = 0;
        for t in transfers {
            let in_range = t.remote >= base
                && t.remote
                    .checked_add(t.len)
                    .is_some_and(|end| end <= base + len);
            if !in_range {
                return Err(TransportError::PeerFailed {
                    peer: self.peer.clone(),
                    detail: format!("remote range {:#x}+{} is not registered", t.remote, t.len),
                });
            }
            // SAFETY: the remote range lies in the peer's registered region,
            // which stays valid while we hold its read lock (Region::host's
            // contract ties it to the agent, whose drop takes the write lock).
            // The local range was bounds-checked by the agent against this
            // agent's own registered region. `copy` (memmove) is used since a
            // loopback read from oneself may overlap.
            unsafe {
                std::ptr::copy(t.remote as *const u8, t.local as *mut u8, t.len as usize);
            }
            bytes += t.len;
        }
        drop(region);
        if let Some(n) = notify {
            target.inbox.deliver(&n, target.epoch);
        }
        tracing::trace!(peer = %target.name, bytes, "loopback read");
        Ok(ReadDone {
            bytes,
            runs: transfers.len(),
        })
    }
}

impl Connection for LoopbackConnection {
    fn failure(&self) -> Option<String> {
        match self.target.strong_count() {
            0 => Some("the agent was dropped".into()),
            _ => None,
        }
    }

    fn read(&self, read: ReadRequest) {
        read.completion
            .complete(self.copy(&read.transfers, read.notify));
    }
}
