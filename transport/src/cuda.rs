//! CUDA device memory (feature `cuda`). UNTESTED ON HARDWARE: this compiles
//! without a CUDA toolkit (cudarc loads libcuda at run time) but no GPU was
//! available when it was written.
//!
//! At `register` the agent asks UCX whether its build handles CUDA memory
//! (`ucp_context_query` memory types). If it does, the device pointer is
//! registered as `UCS_MEMORY_TYPE_CUDA` and peers read device memory
//! directly. If not (Debian's libucx is built without CUDA), the region is
//! mirrored in pinned host memory: the owner copies final blocks device →
//! host with `Agent::publish_blocks` before handing them out, readers land
//! blocks in their own mirror and copy them host → device before the read
//! reports success. The choice is logged.

use std::sync::Arc;

use cudarc::driver::{result, sys::CUdeviceptr, CudaContext};

use crate::coalesce::Run;
use crate::error::{Result, TransportError};
use crate::region::{Region, RegionMemory};

/// A pinned host mirror of a device region.
pub(crate) struct Staging {
    ctx: Arc<CudaContext>,
    host: *mut u8,
    len: u64,
    device_base: CUdeviceptr,
}

// SAFETY: the pinned buffer is owned by this value and only touched by
// driver copies of disjoint block ranges; the context handle is thread-safe.
unsafe impl Send for Staging {}
// SAFETY: as above; methods take &self and copy through the driver.
unsafe impl Sync for Staging {}

fn cuda_err(what: &str, e: impl std::fmt::Debug) -> TransportError {
    TransportError::Cuda(format!("{what}: {e:?}"))
}

impl Staging {
    /// `None` for host memory, or device memory UCX registers itself.
    pub(crate) fn choose(region: &Region, backend_has_cuda: bool) -> Result<Option<Staging>> {
        let RegionMemory::Cuda { ordinal } = region.memory else {
            return Ok(None);
        };
        if backend_has_cuda {
            tracing::info!(
                ordinal,
                "UCX supports CUDA memory: registering device memory directly"
            );
            return Ok(None);
        }
        tracing::info!(
            ordinal,
            bytes = region.len(),
            "UCX has no CUDA memory support: using a pinned host staging buffer"
        );
        let ctx = CudaContext::new(ordinal).map_err(|e| cuda_err("open device", e))?;
        ctx.bind_to_thread()
            .map_err(|e| cuda_err("bind context", e))?;
        // SAFETY: a fresh pinned allocation of `len` bytes; freed in Drop.
        let host = unsafe { result::malloc_host(region.len() as usize, 0) }
            .map_err(|e| cuda_err("cuMemHostAlloc", e))? as *mut u8;
        Ok(Some(Staging {
            ctx,
            host,
            len: region.len(),
            device_base: region.base,
        }))
    }

    pub(crate) fn host_base(&self) -> u64 {
        self.host as u64
    }

    #[allow(clippy::mut_from_ref)] // driver copies into disjoint ranges; see SAFETY
    fn host_slice(&self, offset: u64, len: u64) -> &mut [u8] {
        debug_assert!(offset + len <= self.len);
        // SAFETY: the range lies in our pinned buffer (runs were range-checked
        // against the region, which has the mirror's size); concurrent copies
        // touch disjoint blocks (the agent refuses duplicate destinations).
        unsafe { std::slice::from_raw_parts_mut(self.host.add(offset as usize), len as usize) }
    }

    /// Device → host for the runs' local blocks (publishing before peers read).
    pub(crate) fn to_host(&self, runs: &[Run], block_bytes: u64) -> Result<()> {
        self.for_each_range(runs, block_bytes, |off, len| {
            // SAFETY: device_base+off..+len lies in the registered device region.
            unsafe { result::memcpy_dtoh_sync(self.host_slice(off, len), self.device_base + off) }
                .map_err(|e| cuda_err("cuMemcpyDtoH", e))
        })
    }

    /// Host → device for the runs' local blocks (after a read landed).
    pub(crate) fn to_device(&self, runs: &[Run], block_bytes: u64) -> Result<()> {
        self.for_each_range(runs, block_bytes, |off, len| {
            // SAFETY: as in to_host.
            unsafe { result::memcpy_htod_sync(self.device_base + off, self.host_slice(off, len)) }
                .map_err(|e| cuda_err("cuMemcpyHtoD", e))
        })
    }

    /// Binds the context to this thread, then calls `copy(offset, len)`
    /// with the byte range of each run's local blocks.
    fn for_each_range(
        &self,
        runs: &[Run],
        block_bytes: u64,
        mut copy: impl FnMut(u64, u64) -> Result<()>,
    ) -> Result<()> {
        self.ctx
            .bind_to_thread()
            .map_err(|e| cuda_err("bind context", e))?;
        for r in runs {
            copy(
                u64::from(r.local) * block_bytes,
                u64::from(r.len) * block_bytes,
            )?;
        }
        Ok(())
    }
}

impl Drop for Staging {
    fn drop(&mut self) {
        // SAFETY: allocated by malloc_host in `choose`, freed once.
        if let Err(e) = unsafe { result::free_host(self.host as *mut std::ffi::c_void) } {
            tracing::warn!(error = ?e, "cuMemFreeHost failed");
        }
    }
}
