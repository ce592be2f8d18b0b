//! The UCP context and worker of one agent, and the raw UCX calls made on
//! them. Lives on the progress thread only (`UCS_THREAD_MODE_SINGLE`).

use std::ffi::{c_void, CString};
use std::ptr::{null, null_mut};
use std::sync::Arc;

use tandem_ucx_sys as sys;

use super::config::UcxConfig;
use super::status::{check, describe};
use crate::error::{Result, TransportError};
use crate::metadata::MemoryKind;
use crate::notify::Inbox;

/// Active-message id of notifications.
pub(crate) const NOTIFY_AM_ID: u32 = 0x7a;

/// Where notification AMs are delivered; its address is the AM handler's arg.
pub(crate) struct AmTarget {
    pub(crate) inbox: Arc<Inbox>,
    pub(crate) epoch: u64,
}

pub(crate) struct Worker {
    context: sys::ucp_context_h,
    pub(crate) worker: sys::ucp_worker_h,
    pub(crate) address: Vec<u8>,
    pub(crate) cuda: bool,
    /// Whether endpoints can use peer-failure mode; learnt on the first
    /// connect (a refused attempt makes UCX print an error, once is enough).
    peer_mode: std::cell::Cell<Option<bool>>,
    /// Kept alive while the AM handler may run (until the worker is destroyed).
    _am_target: Box<AmTarget>,
}

impl Worker {
    pub(crate) fn new(config: &UcxConfig, am_target: AmTarget) -> Result<Worker> {
        let context = create_context(config)?;
        let mut w = Worker {
            context,
            worker: null_mut(),
            address: Vec::new(),
            cuda: false,
            peer_mode: std::cell::Cell::new(None),
            _am_target: Box::new(am_target),
        };
        // From here on `Drop` cleans up whatever was created.
        w.cuda = w.query_cuda();
        let params = sys::ucp_worker_params_t {
            field_mask: u64::from(sys::UCP_WORKER_PARAM_FIELD_THREAD_MODE),
            thread_mode: sys::UCS_THREAD_MODE_SINGLE,
            ..Default::default()
        };
        // SAFETY: valid context and params; out-pointer to our field.
        check("ucp_worker_create", unsafe {
            sys::ucp_worker_create(w.context, &params, &mut w.worker)
        })?;
        w.address = w.query_address()?;
        w.set_am_handler()?;
        Ok(w)
    }

    fn query_cuda(&self) -> bool {
        let mut attr = sys::ucp_context_attr_t {
            field_mask: u64::from(sys::UCP_ATTR_FIELD_MEMORY_TYPES),
            ..Default::default()
        };
        // SAFETY: valid context; attr is a properly initialised out-struct.
        let ok = unsafe { sys::ucp_context_query(self.context, &mut attr) } == sys::UCS_OK;
        ok && attr.memory_types & (1u64 << sys::UCS_MEMORY_TYPE_CUDA) != 0
    }

    fn query_address(&self) -> Result<Vec<u8>> {
        let mut addr: *mut sys::ucp_address_t = null_mut();
        let mut len = 0usize;
        // SAFETY: valid worker; out-pointers to locals.
        check("ucp_worker_get_address", unsafe {
            sys::ucp_worker_get_address(self.worker, &mut addr, &mut len)
        })?;
        // SAFETY: UCX returned `len` readable bytes at `addr`, released right after copying.
        let bytes = unsafe { std::slice::from_raw_parts(addr as *const u8, len) }.to_vec();
        // SAFETY: `addr` came from ucp_worker_get_address on this worker.
        unsafe { sys::ucp_worker_release_address(self.worker, addr) };
        Ok(bytes)
    }

    fn set_am_handler(&self) -> Result<()> {
        let params = sys::ucp_am_handler_param_t {
            field_mask: u64::from(
                sys::UCP_AM_HANDLER_PARAM_FIELD_ID
                    | sys::UCP_AM_HANDLER_PARAM_FIELD_CB
                    | sys::UCP_AM_HANDLER_PARAM_FIELD_ARG,
            ),
            id: NOTIFY_AM_ID,
            cb: Some(on_notify),
            arg: &*self._am_target as *const AmTarget as *mut c_void,
            ..Default::default()
        };
        // SAFETY: valid worker; `arg` points into a Box that outlives the worker.
        check("ucp_worker_set_am_recv_handler", unsafe {
            sys::ucp_worker_set_am_recv_handler(self.worker, &params)
        })
    }

    /// One round of progress; the number of events handled.
    pub(crate) fn progress(&self) -> u32 {
        // SAFETY: valid worker, used from its one thread.
        unsafe { sys::ucp_worker_progress(self.worker) }
    }

    /// Registers memory; returns the memory handle and its packed rkey.
    pub(crate) fn mem_map(
        &self,
        base: u64,
        len: u64,
        memory: MemoryKind,
    ) -> Result<(sys::ucp_mem_h, Vec<u8>)> {
        let params = sys::ucp_mem_map_params_t {
            field_mask: u64::from(
                sys::UCP_MEM_MAP_PARAM_FIELD_ADDRESS
                    | sys::UCP_MEM_MAP_PARAM_FIELD_LENGTH
                    | sys::UCP_MEM_MAP_PARAM_FIELD_MEMORY_TYPE,
            ),
            address: base as *mut c_void,
            length: len as usize,
            memory_type: match memory {
                MemoryKind::Host => sys::UCS_MEMORY_TYPE_HOST,
                MemoryKind::Cuda => sys::UCS_MEMORY_TYPE_CUDA,
            },
            ..Default::default()
        };
        let mut memh: sys::ucp_mem_h = null_mut();
        // SAFETY: the caller's Region contract keeps base..base+len valid
        // while registered; UCX only records and pins it.
        check("ucp_mem_map", unsafe {
            sys::ucp_mem_map(self.context, &params, &mut memh)
        })?;
        match self.pack(memh) {
            Ok(rkey) => Ok((memh, rkey)),
            Err(e) => {
                self.mem_unmap(memh);
                Err(e)
            }
        }
    }

    /// Allocates host memory through UCX (its shared-memory transports
    /// allocate segments peers on this host can map; see `Agent::allocate`).
    /// Returns the handle, the address and the packed rkey.
    pub(crate) fn mem_alloc(&self, len: u64) -> Result<(sys::ucp_mem_h, u64, Vec<u8>)> {
        let params = sys::ucp_mem_map_params_t {
            field_mask: u64::from(
                sys::UCP_MEM_MAP_PARAM_FIELD_ADDRESS
                    | sys::UCP_MEM_MAP_PARAM_FIELD_LENGTH
                    | sys::UCP_MEM_MAP_PARAM_FIELD_FLAGS,
            ),
            address: null_mut(),
            length: len as usize,
            flags: sys::UCP_MEM_MAP_ALLOCATE,
            ..Default::default()
        };
        let mut memh: sys::ucp_mem_h = null_mut();
        // SAFETY: UCX allocates; out-pointer to a local.
        check("ucp_mem_map(ALLOCATE)", unsafe {
            sys::ucp_mem_map(self.context, &params, &mut memh)
        })?;
        let mut attr = sys::ucp_mem_attr_t {
            field_mask: u64::from(sys::UCP_MEM_ATTR_FIELD_ADDRESS),
            ..Default::default()
        };
        // SAFETY: memh was just mapped; attr is a valid out-struct.
        let queried = check("ucp_mem_query", unsafe {
            sys::ucp_mem_query(memh, &mut attr)
        });
        match queried.and_then(|()| self.pack(memh)) {
            Ok(rkey) => Ok((memh, attr.address as u64, rkey)),
            Err(e) => {
                self.mem_unmap(memh);
                Err(e)
            }
        }
    }

    /// The packed remote key of a mapping (the caller unmaps on failure).
    fn pack(&self, memh: sys::ucp_mem_h) -> Result<Vec<u8>> {
        let mut buf: *mut c_void = null_mut();
        let mut size = 0usize;
        // SAFETY: memh was just mapped on this context; out-pointers to locals.
        let packed = unsafe { sys::ucp_rkey_pack(self.context, memh, &mut buf, &mut size) };
        check("ucp_rkey_pack", packed)?;
        // SAFETY: UCX returned `size` bytes at `buf`; released after copying.
        let rkey = unsafe { std::slice::from_raw_parts(buf as *const u8, size) }.to_vec();
        // SAFETY: `buf` came from ucp_rkey_pack.
        unsafe { sys::ucp_rkey_buffer_release(buf) };
        Ok(rkey)
    }

    pub(crate) fn mem_unmap(&self, memh: sys::ucp_mem_h) {
        // SAFETY: memh was mapped on this context and is unmapped once.
        let st = unsafe { sys::ucp_mem_unmap(self.context, memh) };
        if st != sys::UCS_OK {
            tracing::warn!(status = %describe(st), "ucp_mem_unmap failed");
        }
    }

    /// Creates an endpoint to a peer worker address, with peer-failure
    /// handling that records the status in `*err_cell`. The bool says
    /// whether UCX will report a dead peer: UCX 1.13's shared-memory AM
    /// transports (posix, sysv) cannot, and with them an endpoint that asks
    /// for peer-failure mode is "unreachable", so we retry without it and
    /// the caller watches the peer process itself.
    pub(crate) fn ep_create(
        &self,
        address: &[u8],
        err_cell: *mut c_void,
    ) -> Result<(sys::ucp_ep_h, bool)> {
        let result = match self.peer_mode.get() {
            Some(mode) => self
                .ep_create_mode(address, err_cell, mode)
                .map(|ep| (ep, mode)),
            None => match self.ep_create_mode(address, err_cell, true) {
                Err(s) if s == sys::UCS_ERR_UNREACHABLE => self
                    .ep_create_mode(address, err_cell, false)
                    .map(|ep| (ep, false)),
                r => r.map(|ep| (ep, true)),
            },
        };
        if let Ok((_, mode)) = result {
            self.peer_mode.set(Some(mode));
        }
        result.map_err(|s| TransportError::Ucx {
            call: "ucp_ep_create",
            status: describe(s),
        })
    }

    fn ep_create_mode(
        &self,
        address: &[u8],
        err_cell: *mut c_void,
        peer_failure: bool,
    ) -> std::result::Result<sys::ucp_ep_h, sys::ucs_status_t> {
        let mut params = sys::ucp_ep_params_t {
            field_mask: u64::from(
                sys::UCP_EP_PARAM_FIELD_REMOTE_ADDRESS | sys::UCP_EP_PARAM_FIELD_ERR_HANDLER,
            ),
            address: address.as_ptr() as *const sys::ucp_address_t,
            err_handler: sys::ucp_err_handler_t {
                cb: Some(on_ep_error),
                arg: err_cell,
            },
            ..Default::default()
        };
        if peer_failure {
            params.field_mask |= u64::from(sys::UCP_EP_PARAM_FIELD_ERR_HANDLING_MODE);
            params.err_mode = sys::UCP_ERR_HANDLING_MODE_PEER;
        }
        let mut ep: sys::ucp_ep_h = null_mut();
        // SAFETY: `address` came checksummed from the peer's
        // ucp_worker_get_address; err_cell outlives the endpoint (the caller
        // keeps it until the close completes).
        match unsafe { sys::ucp_ep_create(self.worker, &params, &mut ep) } {
            s if s == sys::UCS_OK => Ok(ep),
            s => Err(s),
        }
    }

    /// Unpacks a peer's rkey for use on `ep`.
    pub(crate) fn rkey_unpack(&self, ep: sys::ucp_ep_h, rkey: &[u8]) -> Result<sys::ucp_rkey_h> {
        if rkey.is_empty() {
            return Err(TransportError::Ucx {
                call: "ucp_ep_rkey_unpack",
                status: "empty remote key".into(),
            });
        }
        let mut h: sys::ucp_rkey_h = null_mut();
        // SAFETY: live endpoint; the buffer is a checksummed ucp_rkey_pack output.
        check("ucp_ep_rkey_unpack", unsafe {
            sys::ucp_ep_rkey_unpack(ep, rkey.as_ptr() as *const c_void, &mut h)
        })?;
        Ok(h)
    }

    /// Starts closing an endpoint; returns the close request, if any.
    pub(crate) fn ep_close(&self, ep: sys::ucp_ep_h, force: bool) -> sys::ucs_status_ptr_t {
        let p = sys::ucp_request_param_t {
            op_attr_mask: sys::UCP_OP_ATTR_FIELD_FLAGS,
            flags: if force {
                sys::UCP_EP_CLOSE_FLAG_FORCE
            } else {
                0
            },
            ..Default::default()
        };
        // SAFETY: live endpoint, closed once. Outstanding requests on it
        // complete (with an error) through their callbacks.
        unsafe { sys::ucp_ep_close_nbx(ep, &p) }
    }
}

impl Drop for Worker {
    fn drop(&mut self) {
        // SAFETY: created by us, destroyed once, on the owning thread.
        unsafe {
            if !self.worker.is_null() {
                sys::ucp_worker_destroy(self.worker);
            }
            sys::ucp_cleanup(self.context);
        }
    }
}

fn create_context(config: &UcxConfig) -> Result<sys::ucp_context_h> {
    let mut cfg: *mut sys::ucp_config_t = null_mut();
    // SAFETY: null prefix/file read the UCX_* environment; out-pointer.
    check("ucp_config_read", unsafe {
        sys::ucp_config_read(null(), null(), &mut cfg)
    })?;
    let result = (|| {
        for (key, value) in [
            ("TLS", &config.transports),
            ("NET_DEVICES", &config.net_devices),
        ] {
            if let Some(v) = value {
                let (k, v) = (cstring(key)?, cstring(v)?);
                // SAFETY: valid config and NUL-terminated strings.
                check("ucp_config_modify", unsafe {
                    sys::ucp_config_modify(cfg, k.as_ptr(), v.as_ptr())
                })?;
            }
        }
        // No UCP_FEATURE_WAKEUP: with it, UCX 1.13's TCP transport served
        // gets in bursts milliseconds apart (256 KiB reads fell from ~0.9 to
        // ~0.03 GB/s). The progress thread spins while busy and naps when idle.
        let params = sys::ucp_params_t {
            field_mask: u64::from(sys::UCP_PARAM_FIELD_FEATURES),
            features: u64::from(sys::UCP_FEATURE_RMA | sys::UCP_FEATURE_AM),
            ..Default::default()
        };
        let mut ctx: sys::ucp_context_h = null_mut();
        // SAFETY: valid params and config; out-pointer.
        check("ucp_init", unsafe { sys::ucp_init(&params, cfg, &mut ctx) })?;
        Ok(ctx)
    })();
    // SAFETY: cfg came from ucp_config_read and is released once.
    unsafe { sys::ucp_config_release(cfg) };
    result
}

fn cstring(s: &str) -> Result<CString> {
    CString::new(s).map_err(|_| TransportError::Ucx {
        call: "ucp_config_modify",
        status: format!("setting {s:?} contains a NUL byte"),
    })
}

/// Endpoint error handler: records the status for the progress loop.
unsafe extern "C" fn on_ep_error(arg: *mut c_void, _ep: sys::ucp_ep_h, status: sys::ucs_status_t) {
    // SAFETY: `arg` is the connection's boxed status cell (see ep_create),
    // alive until the endpoint's close completes; progress thread only.
    let cell = unsafe { &*(arg as *const std::cell::Cell<sys::ucs_status_t>) };
    cell.set(status);
}

/// Notification AM handler: decodes and queues while the data is valid.
unsafe extern "C" fn on_notify(
    arg: *mut c_void,
    _header: *const c_void,
    _header_length: usize,
    data: *mut c_void,
    length: usize,
    param: *const sys::ucp_am_recv_param_t,
) -> sys::ucs_status_t {
    // SAFETY: `arg` is the worker's boxed AmTarget (see set_am_handler).
    let target = unsafe { &*(arg as *const AmTarget) };
    // SAFETY: UCX passes a valid param for the duration of the callback.
    let rndv = unsafe { (*param).recv_attr } & u64::from(sys::UCP_AM_RECV_ATTR_FLAG_RNDV) != 0;
    if rndv || (data.is_null() && length > 0) {
        tracing::warn!("dropping a notification that was not sent eagerly");
        return sys::UCS_OK;
    }
    let bytes = if length == 0 {
        &[][..]
    } else {
        // SAFETY: for an eager AM, `data` holds `length` bytes during the callback.
        unsafe { std::slice::from_raw_parts(data as *const u8, length) }
    };
    target.inbox.deliver(bytes, target.epoch);
    sys::UCS_OK
}
