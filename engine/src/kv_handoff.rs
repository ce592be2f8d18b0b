//! The engine's side of prefill/decode disaggregation, transport-agnostic:
//! a prefill worker ends a request after its first token and keeps the
//! prompt's blocks pinned under a lease ([`HeldKv`]); a decode worker asks a
//! [`KvLoader`] to pull the blocks it does not have ([`KvLoad`]) and decodes
//! once they landed. The server crate implements `KvLoader` over the
//! transfer layer; the engine never sees a socket.

use std::sync::mpsc::Sender;

use crate::sequence::{RemoteKv, SeqId};

/// Blocks a prefill worker keeps for a decode worker to pull.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct HeldKv {
    /// Released with `EngineHandle::release_lease` (or when it expires).
    pub lease: u64,
    /// The prompt's block table: block `i` holds tokens `i * block_size..`.
    pub block_ids: Vec<u32>,
    /// Chained hashes of the prompt's full blocks (kv_cache::block_hash).
    pub block_hashes: Vec<crate::kv_cache::BlockHash>,
    /// Prompt tokens whose KV the blocks hold.
    pub num_tokens: usize,
}

/// One pull the decode engine needs before it can decode a sequence.
#[derive(Clone, Debug)]
pub struct KvLoad {
    pub seq: SeqId,
    pub remote: RemoteKv,
    /// (remote block, local block) for every prompt block not cached here.
    pub pairs: Vec<(u32, u32)>,
    /// Leading prompt blocks this engine already had (not pulled).
    pub reused_blocks: usize,
}

/// Moves KV blocks into this engine's arena.
pub trait KvLoader: Send + Sync + 'static {
    /// Starts `load`; `done` is told the outcome exactly once, from any
    /// thread. Until then the engine leaves the destination blocks alone.
    fn start(&self, load: KvLoad, done: KvLoadDone);
}

/// Reports a load's outcome to the engine thread. Dropped unreported, it
/// reports a failure, so a bug in a loader cannot strand a sequence.
pub struct KvLoadDone {
    seq: SeqId,
    tx: Option<Sender<(SeqId, Result<(), String>)>>,
}

impl KvLoadDone {
    pub(crate) fn new(seq: SeqId, tx: Sender<(SeqId, Result<(), String>)>) -> Self {
        KvLoadDone { seq, tx: Some(tx) }
    }

    /// `Err` makes the engine compute the missing prompt blocks itself.
    pub fn finish(mut self, outcome: Result<(), String>) {
        if let Some(tx) = self.tx.take() {
            let _ = tx.send((self.seq, outcome));
        }
    }
}

impl Drop for KvLoadDone {
    fn drop(&mut self) {
        if let Some(tx) = self.tx.take() {
            let _ = tx.send((self.seq, Err("the KV loader dropped the load".into())));
        }
    }
}
