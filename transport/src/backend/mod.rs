//! The backend seam: what the agent needs from a transport, nothing more.
//! The agent validates (ranges, layout, epochs) and coalesces; a backend
//! only registers memory, connects to peers and moves byte ranges.

pub(crate) mod loopback;

use std::sync::Arc;
use std::time::Instant;

use crate::completion::Completion;
use crate::error::Result;
use crate::metadata::{AgentMetadata, BackendKind, MemoryKind};
use crate::notify::Inbox;

/// One contiguous copy: `len` bytes from the peer's `remote` address to our `local` address.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Transfer {
    pub local: u64,
    pub remote: u64,
    pub len: u64,
}

/// One `Agent::read` as its backend executes it: move `transfers`, then
/// send `notify` (already encoded) if any, then complete `completion` —
/// with an error at the latest at `deadline`.
pub(crate) struct ReadRequest {
    pub transfers: Vec<Transfer>,
    pub notify: Option<Vec<u8>>,
    pub deadline: Instant,
    pub completion: Arc<Completion>,
}

/// Who an agent is, as its backend needs to know: notifications are
/// delivered to `inbox` if addressed to `epoch`.
pub(crate) struct Identity {
    pub name: String,
    pub epoch: u64,
    pub inbox: Arc<Inbox>,
}

pub(crate) trait Backend: Send + Sync {
    fn kind(&self) -> BackendKind;
    /// The address peers connect to.
    fn worker_address(&self) -> Vec<u8>;
    /// Whether device memory can be registered directly.
    fn supports_cuda(&self) -> bool;
    /// Registers `len` bytes at `base`; returns the packed remote key.
    fn register(&self, base: u64, len: u64, memory: MemoryKind) -> Result<Vec<u8>>;
    /// Allocates and registers `len` bytes of host memory owned by the
    /// backend (freed when it stops); returns (base, packed remote key).
    fn allocate(&self, len: u64) -> Result<(u64, Vec<u8>)>;
    /// Connects to a peer whose metadata carries a region (and its key).
    fn connect(&self, peer: &AgentMetadata) -> Result<Arc<dyn Connection>>;
}

pub(crate) trait Connection: Send + Sync {
    /// `Some(detail)` once the connection has failed for good.
    fn failure(&self) -> Option<String>;
    /// Executes `read` (see [`ReadRequest`]).
    fn read(&self, read: ReadRequest);
}
