//! Endpoints of the progress thread: connecting, noticing failures (UCX's
//! error handler, or the peer's pid for transports that cannot report
//! one), breaking a connection (failing its reads at once) and closing.

use std::cell::Cell;
use std::ffi::c_void;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tandem_ucx_sys as sys;

use super::state::{Closing, Conn, Progress};
use crate::error::{Result, TransportError};
use crate::ucx::ops::Phase;
use crate::ucx::queue::ConnShared;
use crate::ucx::status::describe;

/// How often peers without UCX failure detection are checked for life.
const LIVENESS_PERIOD: Duration = Duration::from_millis(50);
/// How long a close (and shutdown) waits for an endpoint to close.
const CLOSE_GRACE: Duration = Duration::from_secs(2);

impl Progress {
    pub(super) fn connect(
        &mut self,
        peer: String,
        address: &[u8],
        rkey: &[u8],
        local_pid: Option<u32>,
        shared: Arc<ConnShared>,
    ) -> Result<u64> {
        let err = Box::new(Cell::new(sys::UCS_OK));
        let err_ptr = &*err as *const Cell<sys::ucs_status_t> as *mut c_void;
        let (ep, ucx_detects_failure) = self.w.ep_create(address, err_ptr)?;
        if !ucx_detects_failure {
            tracing::info!(
                agent = %self.name, %peer, watched_pid = ?local_pid,
                "these UCX transports cannot report a dead peer: watching its process instead"
            );
        }
        let rkey = match self.w.rkey_unpack(ep, rkey) {
            Ok(r) => r,
            Err(e) => {
                let request = self.w.ep_close(ep, true);
                self.closing_push(request, std::ptr::null_mut(), err, CLOSE_GRACE);
                return Err(e);
            }
        };
        let id = self.next_conn;
        self.next_conn += 1;
        self.conns.insert(
            id,
            Conn {
                ep,
                rkey,
                peer,
                shared,
                err,
                released: false,
                broken: false,
                ucx_detects_failure,
                watch_pid: if ucx_detects_failure { None } else { local_pid },
            },
        );
        Ok(id)
    }

    pub(super) fn peer_name(&self, conn: u64) -> String {
        self.conns
            .get(&conn)
            .map(|c| c.peer.clone())
            .unwrap_or_else(|| format!("connection #{conn}"))
    }

    /// Marks endpoints whose error handler fired, or whose watched peer
    /// process exited, as broken and closes them.
    pub(super) fn check_connections(&mut self, now: Instant) {
        let failed: Vec<u64> = self
            .conns
            .iter()
            .filter(|(_, c)| !c.broken && c.err.get() != sys::UCS_OK)
            .map(|(&id, _)| id)
            .collect();
        for id in failed {
            let status = describe(self.conns[&id].err.get());
            self.break_conn(id, format!("connection lost ({status})"));
        }
        if now.duration_since(self.last_liveness) >= LIVENESS_PERIOD {
            self.last_liveness = now;
            let dead: Vec<(u64, u32)> = self
                .conns
                .iter()
                .filter(|(_, c)| !c.broken)
                .filter_map(|(&id, c)| c.watch_pid.map(|pid| (id, pid)))
                .filter(|&(_, pid)| !crate::liveness::process_alive(pid))
                .collect();
            for (id, pid) in dead {
                self.break_conn(id, format!("peer process {pid} exited"));
            }
        }
        // Close connections the agent released once no read still uses them.
        let idle: Vec<u64> = self
            .conns
            .iter()
            .filter(|(id, c)| c.released && !self.ops.iter().any(|o| o.conn == **id))
            .map(|(&id, _)| id)
            .collect();
        for id in idle {
            if let Some(c) = self.conns.remove(&id) {
                if !c.broken {
                    let request = self.w.ep_close(c.ep, false);
                    self.closing_push(request, c.rkey, c.err, CLOSE_GRACE);
                }
            }
        }
    }

    /// Records why, fails every read on the connection at once, and closes
    /// the endpoint (forced where UCX allows: that completes its requests).
    /// The entry stays so later reads fail fast.
    pub(super) fn break_conn(&mut self, id: u64, why: String) {
        let Some(c) = self.conns.get_mut(&id) else {
            return;
        };
        if c.broken {
            return;
        }
        c.broken = true;
        let _ = c.shared.failure.set(why.clone());
        tracing::warn!(agent = %self.name, peer = %c.peer, %why, "peer connection broken");
        let (ep, force) = (c.ep, c.ucx_detects_failure);
        let rkey = std::mem::replace(&mut c.rkey, std::ptr::null_mut());
        let err = std::mem::replace(&mut c.err, Box::new(Cell::new(sys::UCS_OK)));
        for op in self
            .ops
            .iter_mut()
            .filter(|o| o.conn == id && o.phase != Phase::Abandoned)
        {
            op.phase = Phase::Abandoned;
            op.completion.complete(Err(TransportError::PeerFailed {
                peer: op.peer.clone(),
                detail: why.clone(),
            }));
        }
        let request = self.w.ep_close(ep, force);
        // Without failure detection the close cannot finish against a dead
        // peer: free its request right away instead of waiting.
        let grace = if force { CLOSE_GRACE } else { Duration::ZERO };
        self.closing_push(request, rkey, err, grace);
    }

    pub(super) fn closing_push(
        &mut self,
        request: sys::ucs_status_ptr_t,
        rkey: sys::ucp_rkey_h,
        err: Box<Cell<sys::ucs_status_t>>,
        grace: Duration,
    ) {
        self.closing.push(Closing {
            request,
            rkey,
            _err: err,
            deadline: Instant::now() + grace,
        });
    }

    pub(super) fn advance_closes(&mut self, now: Instant) {
        self.closing.retain(|c| {
            let done = if sys::ucs_ptr_is_ptr(c.request) {
                // SAFETY: an outstanding close request of ours, not yet freed.
                let st = unsafe { sys::ucp_request_check_status(c.request) };
                if st == sys::UCS_INPROGRESS && now < c.deadline {
                    return true;
                }
                // SAFETY: freed once; UCX releases it when it completes.
                unsafe { sys::ucp_request_free(c.request) };
                st != sys::UCS_INPROGRESS
            } else {
                true
            };
            if !c.rkey.is_null() {
                if done {
                    // SAFETY: unpacked by us, its endpoint is closed.
                    unsafe { sys::ucp_rkey_destroy(c.rkey) };
                } else {
                    tracing::warn!("endpoint close timed out; leaking its remote key");
                }
            }
            false
        });
    }
}
