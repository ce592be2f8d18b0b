//! One read in flight on the progress thread, and the C callbacks UCX
//! calls when its requests finish. Callbacks only run inside UCX calls made
//! by the progress thread, so plain `Cell`s suffice.

use std::cell::Cell;
use std::ffi::c_void;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tandem_ucx_sys as sys;

use crate::completion::{Completion, ReadDone};

/// Where a read is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Phase {
    /// Gets posted, waiting for them.
    Getting,
    /// Data arrived; the notification is being sent.
    Notifying,
    /// Already reported (timeout or shutdown); kept until UCX lets go of it.
    Abandoned,
}

pub(crate) struct ReadOp {
    pub(crate) conn: u64,
    pub(crate) peer: String,
    /// Requests UCX still holds a pointer to this op for.
    pub(crate) pending: Cell<usize>,
    /// First failure status reported by a callback (`UCS_OK` if none).
    pub(crate) error: Cell<sys::ucs_status_t>,
    pub(crate) phase: Phase,
    /// Encoded notification; must live until its send completes.
    pub(crate) notify: Option<Vec<u8>>,
    pub(crate) deadline: Instant,
    pub(crate) timeout: Duration,
    pub(crate) completion: Arc<Completion>,
    pub(crate) done: ReadDone,
}

impl ReadOp {
    /// The `user_data` handed to UCX. Valid while the op is boxed in the
    /// progress thread's list, which keeps it until `pending` is 0.
    pub(crate) fn user_data(&self) -> *mut c_void {
        self as *const ReadOp as *mut c_void
    }

    /// Records the outcome of a request posted with this op's `user_data`.
    pub(crate) fn finish_request(&self, status: sys::ucs_status_t) {
        self.pending.set(self.pending.get().saturating_sub(1));
        self.fail(status);
    }

    /// Keeps the first failure.
    pub(crate) fn fail(&self, status: sys::ucs_status_t) {
        if status != sys::UCS_OK && self.error.get() == sys::UCS_OK {
            self.error.set(status);
        }
    }

    /// Accounts for what `ucp_*_nbx` returned: done at once, failed at once,
    /// or a request whose callback comes later.
    pub(crate) fn track(&self, ret: sys::ucs_status_ptr_t) {
        if sys::ucs_ptr_is_ptr(ret) {
            self.pending.set(self.pending.get() + 1);
        } else {
            self.fail(sys::ucs_ptr_status(ret));
        }
    }

    /// Request parameters that route completion to `on_request_done`.
    pub(crate) fn params(&self, flags: u32) -> sys::ucp_request_param_t {
        let mut p = sys::ucp_request_param_t {
            op_attr_mask: sys::UCP_OP_ATTR_FIELD_CALLBACK | sys::UCP_OP_ATTR_FIELD_USER_DATA,
            user_data: self.user_data(),
            ..Default::default()
        };
        if flags != 0 {
            p.op_attr_mask |= sys::UCP_OP_ATTR_FIELD_FLAGS;
            p.flags = flags;
        }
        p.cb.send = Some(on_request_done);
        p
    }
}

/// Completion callback of every get and notification send.
unsafe extern "C" fn on_request_done(
    request: *mut c_void,
    status: sys::ucs_status_t,
    user_data: *mut c_void,
) {
    // SAFETY: user_data is a `ReadOp` boxed in the progress thread's list;
    // the op is only dropped once `pending` reaches 0, i.e. after this
    // callback ran for every request posted with it. We run on the progress
    // thread inside ucp_worker_progress or ucp_ep_close_nbx.
    let op = unsafe { &*(user_data as *const ReadOp) };
    op.finish_request(status);
    // SAFETY: `request` is the handle UCX passed to this callback; the
    // application owns it and frees it exactly once, here.
    unsafe { sys::ucp_request_free(request) };
}
