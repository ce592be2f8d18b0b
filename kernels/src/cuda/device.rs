//! Compiling every kernel for one GPU, loading the modules and looking up
//! entry points; the launch wrappers are in `ops.rs` and `attention.rs`.

use std::collections::HashMap;
use std::sync::Arc;

use cudarc::cublas::sys::cudaDataType_t;
use cudarc::driver::sys::CUdevice_attribute;
use cudarc::driver::{CudaContext, CudaFunction, CudaStream, DeviceRepr, ValidAsZeroBits};
use cudarc::nvrtc::Ptx;
use half::{bf16, f16};

use super::cache;
use super::error::CudaKernelError;
use super::nvrtc::cuda_include_dir;
use super::sources::SOURCES;

mod sealed {
    pub trait Sealed {}
    impl Sealed for f32 {}
    impl Sealed for half::bf16 {}
    impl Sealed for half::f16 {}
}

/// An element type the kernels are instantiated for (f32, bf16, f16).
pub trait CudaElement: DeviceRepr + ValidAsZeroBits + Copy + sealed::Sealed {
    /// Entry-point suffix (`rms_norm_bf16`, ...).
    const SUFFIX: &'static str;
    /// The type as cuBLAS names it.
    const BLAS_TYPE: cudaDataType_t;
}

impl CudaElement for f32 {
    const SUFFIX: &'static str = "f32";
    const BLAS_TYPE: cudaDataType_t = cudaDataType_t::CUDA_R_32F;
}
impl CudaElement for bf16 {
    const SUFFIX: &'static str = "bf16";
    const BLAS_TYPE: cudaDataType_t = cudaDataType_t::CUDA_R_16BF;
}
impl CudaElement for f16 {
    const SUFFIX: &'static str = "f16";
    const BLAS_TYPE: cudaDataType_t = cudaDataType_t::CUDA_R_16F;
}

/// Whether a CUDA driver can be loaded (`libcuda.so`), the first thing to
/// check before [`CudaContext::new`], which panics without one.
pub fn driver_available() -> bool {
    // SAFETY: only tries to dlopen the candidate library names.
    unsafe { cudarc::driver::sys::is_culib_present() }
}

/// Opens GPU `ordinal`, or says why not (no driver, no such device).
pub fn open_device(ordinal: usize) -> Result<Arc<CudaContext>, CudaKernelError> {
    if !driver_available() {
        return Err(CudaKernelError::DriverNotFound);
    }
    CudaContext::new(ordinal).map_err(CudaKernelError::driver(format!("opening GPU {ordinal}")))
}

/// Every tandem kernel, compiled for one device and loaded, with the launch
/// wrappers as methods. Kernels run on `stream`, in order.
pub struct CudaKernels {
    pub(crate) stream: Arc<CudaStream>,
    functions: HashMap<String, CudaFunction>,
    pub(crate) num_sms: usize,
    /// Largest dynamic shared memory a block may opt in to.
    pub(crate) max_shared_optin: usize,
}

impl CudaKernels {
    /// Compiles every source with NVRTC for the stream's device (its own
    /// `compute_XY`; the driver finishes the PTX at load) and loads it.
    /// The PTX is cached in memory and on disk (see `cache.rs`): the first
    /// compile on a machine takes seconds, later ones none.
    pub fn new(stream: Arc<CudaStream>) -> Result<Self, CudaKernelError> {
        let ctx = stream.context().clone();
        let (major, minor) = ctx
            .compute_capability()
            .map_err(CudaKernelError::driver("reading the compute capability"))?;
        if major < 8 {
            return Err(CudaKernelError::Unsupported {
                op: "CudaKernels::new",
                reason: format!(
                    "GPU compute capability {major}.{minor} is below 8.0; the bf16 kernels need \
                     Ampere or newer"
                ),
            });
        }
        let arch = format!("compute_{major}{minor}");
        let include = cuda_include_dir()?;
        // NVRTC programs are independent: compile the sources in parallel.
        let (arch_ref, include_ref) = (&arch, &include);
        let compiled: Vec<_> = std::thread::scope(|scope| {
            let jobs: Vec<_> = SOURCES
                .iter()
                .map(|source| {
                    scope.spawn(move || {
                        cache::ptx(source, arch_ref, include_ref).map(|ptx| (source, ptx))
                    })
                })
                .collect();
            jobs.into_iter()
                .map(|job| {
                    job.join()
                        .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
                })
                .collect()
        });
        let mut functions = HashMap::new();
        for compiled in compiled {
            let (source, ptx) = compiled?;
            let module = ctx
                .load_module(Ptx::from_src(&*ptx))
                .map_err(CudaKernelError::driver(format!("loading {}", source.name)))?;
            for name in source.entry_points() {
                let f = module
                    .load_function(&name)
                    .map_err(CudaKernelError::driver(format!("finding kernel {name}")))?;
                functions.insert(name, f);
            }
        }
        let attribute = |a, what: &str| {
            ctx.attribute(a)
                .map(|v| v.max(0) as usize)
                .map_err(CudaKernelError::driver(format!("reading {what}")))
        };
        Ok(Self {
            num_sms: attribute(
                CUdevice_attribute::CU_DEVICE_ATTRIBUTE_MULTIPROCESSOR_COUNT,
                "the multiprocessor count",
            )?,
            max_shared_optin: attribute(
                CUdevice_attribute::CU_DEVICE_ATTRIBUTE_MAX_SHARED_MEMORY_PER_BLOCK_OPTIN,
                "the shared-memory limit",
            )?,
            stream,
            functions,
        })
    }

    /// The stream every wrapper launches on.
    pub fn stream(&self) -> &Arc<CudaStream> {
        &self.stream
    }

    pub(crate) fn function(&self, name: &str) -> Result<&CudaFunction, CudaKernelError> {
        self.functions
            .get(name)
            .ok_or_else(|| CudaKernelError::Unsupported {
                op: "CudaKernels::function",
                reason: format!("no kernel named {name} was loaded"),
            })
    }
}
