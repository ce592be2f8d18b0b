//! `tandem-transport` moves KV-cache blocks between tandem workers.
//!
//! It follows NIXL's agent model: each worker runs an [`Agent`] that
//! [`register`](Agent::register)s its KV arena, publishes
//! [`metadata`](Agent::metadata) (name, epoch, worker address, remote key,
//! region layout), loads its peers' metadata with
//! [`add_remote`](Agent::add_remote), and pulls blocks with one-sided
//! [`read`](Agent::read)s — a list of (remote block, local block) pairs,
//! coalesced into runs of adjacent ids so a run moves as one transfer.
//! After the data has landed the reader may send a short notification,
//! which the peer receives from [`notifications`](Agent::notifications)
//! (prefill frees the blocks on it).
//!
//! Failure rules (DESIGN.md): every wait has a deadline; a dead peer is an
//! error, never a hang; damaged or stale metadata is refused with an error
//! (never a panic); bad block ids are refused before anything moves.
//!
//! Backends: UCX over the system library (`tandem-ucx-sys`, see its docs
//! for why it is in-tree) and an in-process loopback for unit tests. Over
//! shared memory, UCX 1.13 reads ordinary registered memory only through
//! messages the owner answers; an arena from
//! [`allocate_region`](Agent::allocate_region) is read one-sidedly at memcpy
//! speed (docs/benchmarks.md, "KV transfer").
//!
//! ```no_run
//! use tandem_transport::{Agent, BackendConfig, LayoutDescriptor, UcxConfig};
//! # fn main() -> tandem_transport::Result<()> {
//! let layout = LayoutDescriptor {
//!     model_id: "qwen2.5-0.5b".into(), dtype: "bf16".into(),
//!     block_size: 16, num_layers: 24, num_kv_heads: 2, head_dim: 64,
//! };
//! let block_bytes = layout.block_bytes().unwrap() as usize;
//! let ucx = || BackendConfig::Ucx(UcxConfig::default());
//!
//! // Prefill side: expose the arena, hand the metadata to the decode worker.
//! let prefill = Agent::new("prefill-0", ucx())?;
//! let arena = prefill.allocate_region(block_bytes, 1024, layout.clone())?;
//! let metadata = prefill.metadata();
//!
//! // Decode side: load the peer, pull blocks 3 and 4 into 10 and 11, notify.
//! let decode = Agent::new("decode-0", ucx())?;
//! let _local = decode.allocate_region(block_bytes, 1024, layout)?;
//! let peer = decode.add_remote(&metadata)?;
//! let done = decode.read(&peer, &[(3, 10), (4, 11)], Some(b"req-42"))?.wait()?;
//! assert_eq!(done.runs, 1); // adjacent blocks move as one transfer
//!
//! // Prefill side: the notification says the blocks can be freed.
//! let note = prefill.notifications().recv_timeout(std::time::Duration::from_secs(1));
//! # let _ = (arena, note);
//! # Ok(())
//! # }
//! ```
//! Feature `cuda` registers device memory: directly when the UCX build
//! supports CUDA memory, else through a pinned host staging buffer. That
//! path compiles without a CUDA toolkit but has not been run on a GPU.

mod agent;
mod backend;
mod coalesce;
mod completion;
#[cfg(feature = "cuda")]
mod cuda;
mod error;
mod layout;
mod liveness;
pub mod metadata;
mod notify;
mod region;
mod staging;
pub mod testing;
mod ucx;
mod wire;

pub use agent::{Agent, BackendConfig, RemoteAgent, DEFAULT_READ_TIMEOUT};
pub use coalesce::{coalesce, Run};
pub use completion::{ReadDone, ReadHandle};
pub use error::{MetadataError, Result, Side, TransportError};
pub use layout::LayoutDescriptor;
pub use metadata::AgentMetadata;
pub use notify::{Notification, Notifications, MAX_NOTIFY};
pub use region::{AllocatedRegion, MemoryDescriptor, Region, RegionMemory};
pub use ucx::UcxConfig;
