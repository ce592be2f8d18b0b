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
//! for why it is in-tree) and an in-process loopback for unit tests.
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

pub use agent::{Agent, RemoteAgent, DEFAULT_READ_TIMEOUT};
pub use backend::BackendConfig;
pub use coalesce::{coalesce, Run};
pub use completion::{ReadDone, ReadHandle};
pub use error::{Result, Side, TransportError};
pub use layout::LayoutDescriptor;
pub use metadata::{AgentMetadata, MetadataError};
pub use notify::{Notification, Notifications, MAX_NOTIFY};
pub use region::{AllocatedRegion, MemoryDescriptor, Region, RegionMemory};
pub use ucx::UcxConfig;
