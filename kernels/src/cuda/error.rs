//! Errors of the CUDA kernels: finding and running NVRTC, loading modules,
//! and the checks every launch wrapper makes before touching the device.

use std::path::PathBuf;

use cudarc::driver::DriverError;
use thiserror::Error;

use crate::error::KernelError;

#[derive(Debug, Error)]
pub enum CudaKernelError {
    #[error(
        "libnvrtc (the CUDA runtime compiler) was not found: put the directory holding \
         libnvrtc.so.12 on LD_LIBRARY_PATH (`TANDEM_CUDA_WHEELS=1 source \
         scripts/python_env.sh` installs the nvidia-cuda-nvrtc-cu12 wheel into .venv and \
         exports that directory as TANDEM_NVRTC_LIB_DIR; a CUDA toolkit has it in lib64/)"
    )]
    NvrtcNotFound,

    #[error(
        "no CUDA include directory with cuda_bf16.h found (searched {searched:?}): set \
         TANDEM_CUDA_INCLUDE to one (`TANDEM_CUDA_WHEELS=1 source scripts/python_env.sh` \
         exports it for the nvidia-cuda-runtime-cu12 wheel in .venv) or CUDA_HOME to a CUDA \
         toolkit"
    )]
    HeadersNotFound { searched: Vec<PathBuf> },

    #[error("NVRTC failed to compile {source_name} for {arch} ({status}):\n{log}")]
    Compile {
        source_name: &'static str,
        arch: String,
        status: String,
        log: String,
    },

    #[error(
        "the CUDA driver (libcuda.so.1) was not found: this machine has no NVIDIA driver, \
         or its directory is not on the loader's path"
    )]
    DriverNotFound,

    #[error("CUDA driver call failed while {context}: {source}")]
    Driver {
        context: String,
        #[source]
        source: DriverError,
    },

    #[error("cuBLAS failed while {context}: {message}")]
    Blas { context: String, message: String },

    #[error("{op}: {what} has {len} elements but needs at least {needed}")]
    BufferTooSmall {
        op: &'static str,
        what: &'static str,
        needed: usize,
        len: usize,
    },

    #[error("{op}: {what} = {value} does not fit the kernel's 32-bit index")]
    TooLarge {
        op: &'static str,
        what: &'static str,
        value: usize,
    },

    #[error("{op}: {reason}")]
    Unsupported { op: &'static str, reason: String },

    #[error(transparent)]
    Kernel(#[from] KernelError),
}

impl CudaKernelError {
    /// Wraps a driver error with what was being done.
    pub(crate) fn driver(context: impl Into<String>) -> impl FnOnce(DriverError) -> Self {
        let context = context.into();
        move |source| Self::Driver { context, source }
    }
}
