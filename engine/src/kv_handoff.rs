//! The engine's side of prefill/decode disaggregation, transport-agnostic:
//! a prefill worker ends a request after its first token and keeps the
//! prompt's blocks pinned under a lease, described by a [`KvHandle`]; a
//! decode worker given that handle asks a [`KvLoader`] to pull the blocks
//! it does not have ([`KvLoad`]) and decodes once they landed. The server
//! crate implements `KvLoader` over the transfer layer; the engine never
//! sees a socket.

use std::sync::mpsc::Sender;
use std::sync::Arc;

use crate::kv_cache::{BlockChecksum, BlockHash, BlockId};
use crate::sequence::SeqId;

/// Where a prompt's KV waits on a prefill worker, from the prefill engine
/// that holds it to the decode engine that pulls it: the prefill engine
/// makes it, its worker adds `agent` and sends it to the router, which
/// hands it as is to a decode worker (JSON on the internal API).
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct KvHandle {
    /// The prefill worker's transfer-agent metadata, opaque to the engine
    /// (empty until the worker fills it in). Base64 in JSON.
    #[serde(with = "base64_bytes")]
    pub agent: Arc<[u8]>,
    /// Released with `EngineHandle::release_lease` (or when it expires).
    pub lease: u64,
    /// The prompt's block table on the prefill worker: block `i` holds
    /// tokens `i * block_size..`.
    pub block_ids: Vec<BlockId>,
    /// Chained hashes of the prompt's full blocks (kv_cache::block_hash);
    /// the decode engine refuses a handle whose hashes differ from its own.
    pub block_hashes: Vec<BlockHash>,
    /// The bytes of each block of `block_ids` when the lease began; the
    /// decode engine checks what it pulled against them (see
    /// `kv_cache::BlockChecksum`). Missing (an older prefill worker), it is
    /// empty and the decode engine refuses the handle, naming the version.
    #[serde(default)]
    pub block_checksums: Vec<BlockChecksum>,
    /// Prompt tokens whose KV the blocks hold.
    pub num_tokens: usize,
}

/// `KvHandle::agent` as a base64 string.
mod base64_bytes {
    use std::sync::Arc;

    use base64::engine::general_purpose::STANDARD;
    use base64::Engine as _;
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(bytes: &Arc<[u8]>, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&STANDARD.encode(bytes))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Arc<[u8]>, D::Error> {
        let text = String::deserialize(d)?;
        STANDARD.decode(text).map(Arc::from).map_err(|e| {
            serde::de::Error::custom(format!("the transfer-agent metadata is not base64: {e}"))
        })
    }
}

/// One block to copy from a prefill worker's arena into this one's.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BlockPair {
    pub remote: BlockId,
    pub local: BlockId,
    /// What the block's bytes hash to on the prefill worker.
    pub checksum: BlockChecksum,
}

/// One pull the decode engine needs before it can decode a sequence.
#[derive(Clone, Debug)]
pub struct KvLoad {
    pub seq: SeqId,
    pub remote: KvHandle,
    /// Every prompt block not cached here.
    pub pairs: Vec<BlockPair>,
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_handle_serializes_with_base64_agent_and_bare_numbers() {
        let handle = KvHandle {
            agent: Arc::from(&b"peer"[..]),
            lease: 3,
            block_ids: vec![BlockId(5), BlockId(1)],
            block_hashes: vec![BlockHash(u64::MAX)],
            block_checksums: vec![BlockChecksum(9), BlockChecksum(10)],
            num_tokens: 20,
        };
        let json = serde_json::to_value(&handle).unwrap();
        assert_eq!(
            json,
            serde_json::json!({
                "agent": "cGVlcg==", "lease": 3, "block_ids": [5, 1],
                "block_hashes": [u64::MAX], "block_checksums": [9, 10], "num_tokens": 20,
            })
        );
        assert_eq!(serde_json::from_value::<KvHandle>(json).unwrap(), handle);
    }

    #[test]
    fn an_agent_that_is_not_base64_is_refused() {
        let json = serde_json::json!({
            "agent": "not base64!", "lease": 3, "block_ids": [],
            "block_hashes": [], "block_checksums": [], "num_tokens": 0,
        });
        let e = serde_json::from_value::<KvHandle>(json).unwrap_err();
        assert!(e.to_string().contains("not base64"), "{e}");
    }
}
