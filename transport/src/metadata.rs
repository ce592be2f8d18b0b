//! Agent metadata: what a peer needs to read from this agent — its name and
//! incarnation (epoch), its backend's worker address, and the registered
//! region (address, block geometry, layout, remote key).
//!
//! Wire format (little endian):
//! `magic "TDMD" | version u16 | body_len u32 | body | xxh3-64(magic..body) u64`.
//! The checksum matters beyond hygiene: a damaged remote key handed to UCX's
//! `ucp_ep_rkey_unpack` may crash the process, so damaged bytes must be
//! refused before any of them reach the backend.

use crate::error::MetadataError;
use crate::layout::LayoutDescriptor;
use crate::wire::{Reader, Writer};

const MAGIC: &[u8; 4] = b"TDMD";
const VERSION: u16 = 1;
const HEADER: usize = 4 + 2 + 4;
const CHECKSUM: usize = 8;
/// Longest agent name, model id or dtype string accepted.
pub const MAX_NAME: usize = 256;
/// Longest worker address or remote key accepted (UCX's are < 1 KiB).
pub const MAX_BLOB: usize = 64 * 1024;

/// Which backend produced the metadata; both sides must use the same one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BackendKind {
    /// In-process memcpy (unit tests).
    Loopback = 1,
    /// UCX over the system library.
    Ucx = 2,
}

impl BackendKind {
    /// A short name for messages.
    pub fn name(self) -> &'static str {
        match self {
            BackendKind::Loopback => "loopback",
            BackendKind::Ucx => "ucx",
        }
    }
}

/// Where the registered region's bytes live.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MemoryKind {
    /// Host (CPU) memory.
    Host = 1,
    /// CUDA device memory registered with UCX directly.
    Cuda = 2,
}

/// The registered region as a peer sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RegionInfo {
    /// Address of block 0 in the owner's address space (what the rkey covers).
    pub base_addr: u64,
    /// Bytes per block.
    pub block_bytes: u64,
    /// Blocks in the region.
    pub num_blocks: u32,
    /// Memory kind of the bytes a reader reaches.
    pub memory: MemoryKind,
    /// The layout handshake descriptor.
    pub layout: LayoutDescriptor,
    /// Backend remote key (UCX packed rkey; empty for loopback).
    pub rkey: Vec<u8>,
}

/// Everything a peer loads with `Agent::add_remote`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AgentMetadata {
    /// The agent's unique name.
    pub name: String,
    /// Incarnation id: a restarted agent has a larger one.
    pub epoch: u64,
    /// OS process id of the agent.
    pub pid: u32,
    /// Hash of the host's boot id (0: unknown); equal ids mean one host.
    pub host_id: u64,
    /// Backend that produced the address and key.
    pub backend: BackendKind,
    /// Backend worker address (UCX `ucp_worker_get_address`, loopback id).
    pub worker_address: Vec<u8>,
    /// The registered region, if any.
    pub region: Option<RegionInfo>,
}

impl AgentMetadata {
    /// Serializes to the wire format.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut body = Writer::default();
        body.str(&self.name);
        body.u64(self.epoch);
        body.u32(self.pid);
        body.u64(self.host_id);
        body.u8(self.backend as u8);
        body.bytes(&self.worker_address);
        match &self.region {
            None => body.u8(0),
            Some(r) => {
                body.u8(1);
                body.u64(r.base_addr);
                body.u64(r.block_bytes);
                body.u32(r.num_blocks);
                body.u8(r.memory as u8);
                body.str(&r.layout.model_id);
                body.str(&r.layout.dtype);
                body.u32(r.layout.block_size);
                body.u32(r.layout.num_layers);
                body.u32(r.layout.num_kv_heads);
                body.u32(r.layout.head_dim);
                body.bytes(&r.rkey);
            }
        }
        let mut out = Writer::default();
        out.buf.extend_from_slice(MAGIC);
        out.u16(VERSION);
        out.u32(u32::try_from(body.buf.len()).unwrap_or(u32::MAX));
        out.buf.extend_from_slice(&body.buf);
        let sum = xxhash_rust::xxh3::xxh3_64(&out.buf);
        out.u64(sum);
        out.buf
    }

    /// Parses the wire format. Never panics: any malformed input is an error.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, MetadataError> {
        if bytes.len() < HEADER + CHECKSUM {
            return Err(MetadataError::TooShort(bytes.len()));
        }
        let mut head = Reader::new(bytes);
        if head.u32("magic")?.to_le_bytes() != *MAGIC {
            return Err(MetadataError::BadMagic);
        }
        let version = head.u16("version")?;
        if version != VERSION {
            return Err(MetadataError::UnsupportedVersion(version));
        }
        let declared = head.u32("body_len")? as usize;
        let actual = bytes.len() - HEADER - CHECKSUM;
        if declared != actual {
            return Err(MetadataError::LengthMismatch { declared, actual });
        }
        let (signed, sum) = bytes.split_at(HEADER + actual);
        if Reader::new(sum).u64("checksum")? != xxhash_rust::xxh3::xxh3_64(signed) {
            return Err(MetadataError::ChecksumMismatch);
        }
        Self::parse_body(&signed[HEADER..])
    }

    fn parse_body(body: &[u8]) -> Result<Self, MetadataError> {
        let mut r = Reader::new(body);
        let name = r.str("name", MAX_NAME)?;
        let epoch = r.u64("epoch")?;
        let pid = r.u32("pid")?;
        let host_id = r.u64("host_id")?;
        let backend = match r.u8("backend")? {
            1 => BackendKind::Loopback,
            2 => BackendKind::Ucx,
            v => return Err(invalid("backend", v.into())),
        };
        let worker_address = r.bytes("worker_address", MAX_BLOB)?.to_vec();
        let region = match r.u8("has_region")? {
            0 => None,
            1 => Some(parse_region(&mut r)?),
            v => return Err(invalid("has_region", v.into())),
        };
        r.finish()?;
        Ok(AgentMetadata {
            name,
            epoch,
            pid,
            host_id,
            backend,
            worker_address,
            region,
        })
    }
}

fn parse_region(r: &mut Reader<'_>) -> Result<RegionInfo, MetadataError> {
    let base_addr = r.u64("base_addr")?;
    let block_bytes = r.u64("block_bytes")?;
    let num_blocks = r.u32("num_blocks")?;
    let memory = match r.u8("memory")? {
        1 => MemoryKind::Host,
        2 => MemoryKind::Cuda,
        v => return Err(invalid("memory", v.into())),
    };
    let layout = LayoutDescriptor {
        model_id: r.str("model_id", MAX_NAME)?,
        dtype: r.str("dtype", MAX_NAME)?,
        block_size: r.u32("block_size")?,
        num_layers: r.u32("num_layers")?,
        num_kv_heads: r.u32("num_kv_heads")?,
        head_dim: r.u32("head_dim")?,
    };
    let rkey = r.bytes("rkey", MAX_BLOB)?.to_vec();
    if block_bytes == 0 {
        return Err(invalid("block_bytes", 0));
    }
    // The region must fit the address space: later offset arithmetic relies on it.
    let fits = block_bytes
        .checked_mul(u64::from(num_blocks))
        .and_then(|len| base_addr.checked_add(len))
        .is_some();
    if !fits {
        return Err(invalid("num_blocks", num_blocks.into()));
    }
    Ok(RegionInfo {
        base_addr,
        block_bytes,
        num_blocks,
        memory,
        layout,
        rkey,
    })
}

fn invalid(field: &'static str, value: u64) -> MetadataError {
    MetadataError::InvalidValue { field, value }
}
