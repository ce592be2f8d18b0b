//! Reads on the progress thread: posting one get per run, completing when
//! UCX is done with them, the notification after the data, and deadlines.

use std::cell::Cell;
use std::ffi::c_void;
use std::time::Instant;

use tandem_ucx_sys as sys;

use super::state::Progress;
use crate::backend::ReadRequest;
use crate::completion::ReadDone;
use crate::error::TransportError;
use crate::ucx::ops::{Phase, ReadOp};
use crate::ucx::status::describe;
use crate::ucx::worker::NOTIFY_AM_ID;

/// What to do with a read after a step.
pub(super) enum Next {
    Keep,
    Remove,
    /// Reported already; park it until UCX releases its requests.
    Abandon,
}

impl Progress {
    pub(super) fn start_read(&mut self, conn_id: u64, read: ReadRequest) {
        let ReadRequest {
            transfers,
            notify,
            deadline,
            completion,
        } = read;
        let Some(conn) = self.conns.get(&conn_id).filter(|c| !c.broken) else {
            let detail = self
                .conns
                .get(&conn_id)
                .and_then(|c| c.shared.failure.get().cloned())
                .unwrap_or_else(|| "connection closed".into());
            completion.complete(Err(TransportError::PeerFailed {
                peer: self.peer_name(conn_id),
                detail,
            }));
            return;
        };
        let op = Box::new(ReadOp {
            conn: conn_id,
            peer: conn.peer.clone(),
            pending: Cell::new(0),
            error: Cell::new(sys::UCS_OK),
            phase: Phase::Getting,
            notify,
            deadline,
            timeout: deadline.saturating_duration_since(Instant::now()),
            completion,
            done: ReadDone {
                bytes: transfers.iter().map(|t| t.len).sum(),
                runs: transfers.len(),
            },
        });
        let params = op.params(0);
        for t in &transfers {
            // SAFETY: live endpoint and rkey of this connection; the local
            // range lies in this agent's registered region and the remote
            // range in the peer's (both checked by the agent). `op` stays
            // boxed in `self.ops` until its callbacks have run.
            let ret = unsafe {
                sys::ucp_get_nbx(
                    conn.ep,
                    t.local as *mut c_void,
                    t.len as usize,
                    t.remote,
                    conn.rkey,
                    &params,
                )
            };
            op.track(ret);
            if op.error.get() != sys::UCS_OK {
                break;
            }
        }
        self.ops.push(op);
    }

    /// Completes reads whose requests are done, posts notifications, and
    /// fails reads past their deadline (breaking the connection).
    pub(super) fn advance_reads(&mut self, now: Instant) {
        let mut i = 0;
        while i < self.ops.len() {
            match self.step(i, now) {
                Next::Keep => i += 1,
                Next::Remove => drop(self.ops.swap_remove(i)),
                Next::Abandon => {
                    let op = self.ops.swap_remove(i);
                    if op.pending.get() > 0 {
                        self.abandoned.push(op);
                    }
                }
            }
        }
        self.abandoned.retain(|op| op.pending.get() > 0);
    }

    /// Advances op `i`.
    pub(super) fn step(&mut self, i: usize, now: Instant) -> Next {
        let op = &mut self.ops[i];
        if op.phase == Phase::Abandoned {
            return Next::Abandon;
        }
        if op.pending.get() > 0 {
            if now < op.deadline {
                return Next::Keep;
            }
            op.phase = Phase::Abandoned;
            op.completion.complete(Err(TransportError::Timeout {
                peer: op.peer.clone(),
                after: op.timeout,
            }));
            let (conn, after) = (op.conn, op.timeout);
            self.break_conn(conn, format!("a read timed out after {after:?}"));
            return Next::Abandon;
        }
        if op.error.get() != sys::UCS_OK {
            let detail = self
                .conns
                .get(&op.conn)
                .and_then(|c| c.shared.failure.get().cloned());
            let op = &self.ops[i];
            let detail =
                detail.unwrap_or_else(|| format!("transfer failed ({})", describe(op.error.get())));
            op.completion.complete(Err(TransportError::PeerFailed {
                peer: op.peer.clone(),
                detail,
            }));
            return Next::Remove;
        }
        if op.phase == Phase::Getting && op.notify.is_some() {
            op.phase = Phase::Notifying;
            self.send_notify(i);
            return Next::Keep;
        }
        op.completion.complete(Ok(op.done));
        Next::Remove
    }

    pub(super) fn send_notify(&mut self, i: usize) {
        let op = &self.ops[i];
        let Some(conn) = self.conns.get(&op.conn).filter(|c| !c.broken) else {
            op.fail(sys::UCS_ERR_CONNECTION_RESET);
            return;
        };
        let msg = op.notify.as_deref().unwrap_or_default();
        let params = op.params(sys::UCP_AM_SEND_FLAG_EAGER);
        // SAFETY: live endpoint; `msg` is owned by the boxed op, which stays
        // alive until this request's callback has run.
        let ret = unsafe {
            sys::ucp_am_send_nbx(
                conn.ep,
                NOTIFY_AM_ID,
                std::ptr::null(),
                0,
                msg.as_ptr() as *const c_void,
                msg.len(),
                &params,
            )
        };
        op.track(ret);
    }
}
