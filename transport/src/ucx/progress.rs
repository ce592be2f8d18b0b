//! The progress thread: executes commands, drives UCX, completes reads and
//! enforces their deadlines. It spins while work is in flight or was seen
//! in the last few milliseconds (over TCP a peer's gets are served by our
//! progress), and otherwise naps a millisecond at a time, woken early by
//! commands: an idle agent costs ~1000 wake-ups a second, and the first
//! request after an idle spell waits at most a millisecond.

use std::cell::Cell;
use std::collections::HashMap;
use std::ffi::c_void;
use std::sync::atomic::Ordering;
use std::sync::mpsc::SyncSender;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tandem_ucx_sys as sys;

use super::ops::{Phase, ReadOp};
use super::status::describe;
use super::worker::{AmTarget, Worker, NOTIFY_AM_ID};
use super::{Command, ConnShared, Shared, UcxConfig};
use crate::backend::{Identity, Transfer};
use crate::completion::{Completion, ReadDone};
use crate::error::{Result, TransportError};

/// How long the thread keeps spinning after the last activity.
const SPIN_AFTER_ACTIVITY: Duration = Duration::from_millis(5);
/// One idle nap.
const NAP: Duration = Duration::from_millis(1);
/// How often peers without UCX failure detection are checked for life.
const LIVENESS_PERIOD: Duration = Duration::from_millis(50);
/// How long shutdown waits for endpoints to close.
const CLOSE_GRACE: Duration = Duration::from_secs(2);

struct Conn {
    ep: sys::ucp_ep_h,
    rkey: sys::ucp_rkey_h,
    peer: String,
    shared: Arc<ConnShared>,
    /// Written by the endpoint error handler.
    err: Box<Cell<sys::ucs_status_t>>,
    /// The agent let go of it; close once no read uses it.
    released: bool,
    /// Failed or timed out: already closed, reads refused.
    broken: bool,
    /// Whether UCX reports this peer's failure (peer error-handling mode).
    /// Without it, a force close is not allowed and requests to a dead
    /// peer never complete: reads are failed and abandoned instead.
    ucx_detects_failure: bool,
    /// Pid to watch when UCX cannot report this peer's death.
    watch_pid: Option<u32>,
}

/// An endpoint close in progress, with what must outlive it.
struct Closing {
    request: sys::ucs_status_ptr_t,
    rkey: sys::ucp_rkey_h,
    _err: Box<Cell<sys::ucs_status_t>>,
    deadline: Instant,
}

/// What to do with a read after a step.
enum Next {
    Keep,
    Remove,
    /// Reported already; park it until UCX releases its requests.
    Abandon,
}

struct Memory {
    base: u64,
    len: u64,
    memh: sys::ucp_mem_h,
    rkey: Vec<u8>,
}

/// Fields drop in declaration order: the worker (`w`) is destroyed before
/// the ops and close records whose addresses UCX callbacks may hold.
struct Progress {
    shared: Arc<Shared>,
    name: String,
    w: Worker,
    mems: Vec<Memory>,
    conns: HashMap<u64, Conn>,
    next_conn: u64,
    /// Boxed so an op's address (UCX's `user_data`) stays put when the Vec grows.
    #[allow(clippy::vec_box)]
    ops: Vec<Box<ReadOp>>,
    /// Reads already reported (failed) whose requests UCX still holds.
    #[allow(clippy::vec_box)]
    abandoned: Vec<Box<ReadOp>>,
    closing: Vec<Closing>,
    last_liveness: Instant,
}

/// Thread body: sets up UCX, reports (address, CUDA support) or the setup
/// error on `started`, then runs until the backend is dropped.
pub(crate) fn run(
    config: &UcxConfig,
    me: Identity,
    shared: Arc<Shared>,
    started: SyncSender<Result<(Vec<u8>, bool)>>,
) {
    let target = AmTarget {
        inbox: me.inbox,
        epoch: me.epoch,
    };
    let w = match Worker::new(config, target) {
        Ok(w) => w,
        Err(e) => {
            let _ = started.send(Err(e));
            return;
        }
    };
    let _ = started.send(Ok((w.address.clone(), w.cuda)));
    let mut p = Progress {
        shared,
        name: me.name,
        w,
        mems: Vec::new(),
        conns: HashMap::new(),
        next_conn: 1,
        ops: Vec::new(),
        abandoned: Vec::new(),
        closing: Vec::new(),
        last_liveness: Instant::now(),
    };
    p.run();
    p.shutdown();
}

impl Progress {
    fn run(&mut self) {
        let mut last_activity = Instant::now();
        while !self.shared.stop.load(Ordering::Acquire) {
            let commands = self.shared.take_commands();
            let busy = !commands.is_empty();
            for c in commands {
                self.execute(c);
            }
            let mut events = 0;
            loop {
                let n = self.w.progress();
                if n == 0 {
                    break;
                }
                events += n;
            }
            let now = Instant::now();
            self.check_connections(now);
            self.advance_reads(now);
            self.advance_closes(now);
            if busy || events > 0 {
                last_activity = now;
            }
            if !self.ops.is_empty() || now.duration_since(last_activity) < SPIN_AFTER_ACTIVITY {
                // Yield rather than spin: on a small machine the thread
                // waiting for our completion (or the peer's progress thread)
                // may need this core, and a pure spin delays it by a tick.
                std::thread::yield_now();
                continue;
            }
            self.shared.nap(NAP);
        }
    }

    fn execute(&mut self, cmd: Command) {
        match cmd {
            Command::Register {
                base,
                len,
                memory,
                reply,
            } => {
                let _ = reply.send(self.register(base, len, memory));
            }
            Command::Allocate { len, reply } => {
                let _ = reply.send(self.allocate(len));
            }
            Command::Connect {
                peer,
                address,
                rkey,
                local_pid,
                shared,
                reply,
            } => {
                let _ = reply.send(self.connect(peer, &address, &rkey, local_pid, shared));
            }
            Command::Disconnect { conn } => {
                if let Some(c) = self.conns.get_mut(&conn) {
                    c.released = true;
                }
            }
            Command::Read {
                conn,
                transfers,
                notify,
                deadline,
                completion,
            } => self.start_read(conn, transfers, notify, deadline, completion),
        }
    }

    fn register(
        &mut self,
        base: u64,
        len: u64,
        memory: crate::metadata::MemoryKind,
    ) -> Result<Vec<u8>> {
        if let Some(m) = self.mems.iter().find(|m| m.base == base && m.len == len) {
            return Ok(m.rkey.clone());
        }
        let (memh, rkey) = self.w.mem_map(base, len, memory)?;
        tracing::debug!(agent = %self.name, base, len, rkey_bytes = rkey.len(), "memory registered");
        self.mems.push(Memory {
            base,
            len,
            memh,
            rkey: rkey.clone(),
        });
        Ok(rkey)
    }

    fn allocate(&mut self, len: u64) -> Result<(u64, Vec<u8>)> {
        let (memh, base, rkey) = self.w.mem_alloc(len)?;
        tracing::info!(agent = %self.name, base, len, "memory allocated by UCX");
        self.mems.push(Memory {
            base,
            len,
            memh,
            rkey: rkey.clone(),
        });
        Ok((base, rkey))
    }

    fn connect(
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

    fn start_read(
        &mut self,
        conn_id: u64,
        transfers: Vec<Transfer>,
        notify: Option<Vec<u8>>,
        deadline: Instant,
        completion: Arc<Completion>,
    ) {
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

    fn peer_name(&self, conn: u64) -> String {
        self.conns
            .get(&conn)
            .map(|c| c.peer.clone())
            .unwrap_or_else(|| format!("connection #{conn}"))
    }

    /// Marks endpoints whose error handler fired, or whose watched peer
    /// process exited, as broken and closes them.
    fn check_connections(&mut self, now: Instant) {
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
    fn break_conn(&mut self, id: u64, why: String) {
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

    fn closing_push(
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

    fn advance_closes(&mut self, now: Instant) {
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

    /// Completes reads whose requests are done, posts notifications, and
    /// fails reads past their deadline (breaking the connection).
    fn advance_reads(&mut self, now: Instant) {
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
    fn step(&mut self, i: usize, now: Instant) -> Next {
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

    fn send_notify(&mut self, i: usize) {
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

    fn shutdown(&mut self) {
        for op in &mut self.ops {
            if op.phase != Phase::Abandoned {
                op.phase = Phase::Abandoned;
                op.completion
                    .complete(Err(TransportError::ShutDown(self.name.clone())));
            }
        }
        let ids: Vec<u64> = self.conns.keys().copied().collect();
        for id in ids {
            self.break_conn(id, "agent shut down".into());
        }
        self.conns.clear();
        while !self.closing.is_empty() {
            self.w.progress();
            self.advance_closes(Instant::now());
        }
        for m in self.mems.drain(..) {
            self.w.mem_unmap(m.memh);
        }
        // The worker is destroyed when `self.w` drops, before the ops whose
        // addresses its requests may still hold (field order).
    }
}
