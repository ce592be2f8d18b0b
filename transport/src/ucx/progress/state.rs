//! The progress thread's state. Its behaviour is split by concern, each an
//! `impl Progress` block: the loop, commands and memory (`progress.rs`),
//! endpoints (`connections.rs`) and reads (`reads.rs`). The types live here
//! so that those files depend on this one, not on each other.

use std::cell::Cell;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Instant;

use tandem_ucx_sys as sys;

use crate::ucx::ops::ReadOp;
use crate::ucx::queue::{ConnShared, Shared};
use crate::ucx::worker::Worker;

/// A registered (or UCX-allocated) memory region.
pub(super) struct Memory {
    pub(super) base: u64,
    pub(super) len: u64,
    pub(super) memh: sys::ucp_mem_h,
    pub(super) rkey: Vec<u8>,
}

/// Fields drop in declaration order: the worker (`w`) is destroyed before
/// the ops and close records whose addresses UCX callbacks may hold.
pub(super) struct Progress {
    pub(super) shared: Arc<Shared>,
    pub(super) name: String,
    pub(super) w: Worker,
    pub(super) mems: Vec<Memory>,
    pub(super) conns: HashMap<u64, Conn>,
    pub(super) next_conn: u64,
    /// Boxed so an op's address (UCX's `user_data`) stays put when the Vec grows.
    #[allow(clippy::vec_box)]
    pub(super) ops: Vec<Box<ReadOp>>,
    /// Reads already reported (failed) whose requests UCX still holds.
    #[allow(clippy::vec_box)]
    pub(super) abandoned: Vec<Box<ReadOp>>,
    pub(super) closing: Vec<Closing>,
    pub(super) last_liveness: Instant,
}

/// An endpoint to a peer, with its unpacked remote key.
pub(super) struct Conn {
    pub(super) ep: sys::ucp_ep_h,
    pub(super) rkey: sys::ucp_rkey_h,
    pub(super) peer: String,
    pub(super) shared: Arc<ConnShared>,
    /// Written by the endpoint error handler.
    pub(super) err: Box<Cell<sys::ucs_status_t>>,
    /// The agent let go of it; close once no read uses it.
    pub(super) released: bool,
    /// Failed or timed out: already closed, reads refused.
    pub(super) broken: bool,
    /// Whether UCX reports this peer's failure (peer error-handling mode).
    /// Without it, a force close is not allowed and requests to a dead
    /// peer never complete: reads are failed and abandoned instead.
    pub(super) ucx_detects_failure: bool,
    /// Pid to watch when UCX cannot report this peer's death.
    pub(super) watch_pid: Option<u32>,
}

/// An endpoint close in progress, with what must outlive it.
pub(super) struct Closing {
    pub(super) request: sys::ucs_status_ptr_t,
    pub(super) rkey: sys::ucp_rkey_h,
    pub(super) _err: Box<Cell<sys::ucs_status_t>>,
    pub(super) deadline: Instant,
}
