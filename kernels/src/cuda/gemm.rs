//! The GEMMs of a decoder step through cuBLAS (`cublasGemmEx`, f32
//! accumulation): `y = x · wᵀ` with the weight stored `[out, in]` as
//! checkpoints store it, so nothing is transposed at load.

use std::sync::Arc;

use cudarc::cublas::result::gemm_ex;
use cudarc::cublas::sys::{
    cublasComputeType_t, cublasGemmAlgo_t, cublasOperation_t, cudaDataType_t,
};
use cudarc::cublas::CudaBlas;
use cudarc::driver::{CudaStream, CudaView, CudaViewMut, DevicePtr, DevicePtrMut};

use super::device::CudaElement;
use super::error::CudaKernelError;
use super::ops::{index_u32, need, product};

type Result<T> = std::result::Result<T, CudaKernelError>;

/// The sizes of one `y[rows, out] = x[rows, in] · w[out, in]ᵀ (+ β·y)`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct GemmShape {
    pub rows: usize,
    pub in_dim: usize,
    pub out_dim: usize,
}

/// A cuBLAS handle bound to the kernels' stream.
pub struct Blas {
    blas: CudaBlas,
    stream: Arc<CudaStream>,
}

impl Blas {
    /// Loads cuBLAS (`libcublas`) and creates a handle on `stream`.
    pub fn new(stream: Arc<CudaStream>) -> Result<Self> {
        let blas = CudaBlas::new(stream.clone()).map_err(|e| CudaKernelError::Blas {
            context: "creating a cuBLAS handle (is libcublas on the loader's path?)".into(),
            message: e.to_string(),
        })?;
        Ok(Self { blas, stream })
    }

    /// `y = x · wᵀ`, or `y = x · wᵀ + y` with `accumulate` (a bias already
    /// in `y`, or a residual). Inputs are `T`; `y` is `T` or f32 (logits).
    /// Products accumulate in f32 and `y` is rounded once.
    pub fn linear<T: CudaElement, O: CudaElement>(
        &self,
        y: &mut CudaViewMut<'_, O>,
        x: &CudaView<'_, T>,
        w: &CudaView<'_, T>,
        shape: GemmShape,
        accumulate: bool,
    ) -> Result<()> {
        const OP: &str = "linear";
        let GemmShape {
            rows,
            in_dim,
            out_dim,
        } = shape;
        if O::BLAS_TYPE != T::BLAS_TYPE && O::BLAS_TYPE != cudaDataType_t::CUDA_R_32F {
            return Err(CudaKernelError::Unsupported {
                op: OP,
                reason: format!(
                    "a {} product can be written as {} or f32, not {}",
                    T::SUFFIX,
                    T::SUFFIX,
                    O::SUFFIX
                ),
            });
        }
        need(OP, "x", x.len(), product(OP, "rows * in", rows, in_dim)?)?;
        need(OP, "w", w.len(), product(OP, "out * in", out_dim, in_dim)?)?;
        need(OP, "y", y.len(), product(OP, "rows * out", rows, out_dim)?)?;
        if rows == 0 || out_dim == 0 {
            return Ok(());
        }
        // cuBLAS takes the sizes as i32; `index_u32` bounds them by i32::MAX.
        let dim = |what, v| index_u32(OP, what, v).map(|v| v as i32);
        let (m, n, k) = (dim("out", out_dim)?, dim("rows", rows)?, dim("in", in_dim)?);
        let alpha = 1.0f32;
        let beta = if accumulate { 1.0f32 } else { 0.0 };
        let (w_ptr, _w_sync) = w.device_ptr(&self.stream);
        let (x_ptr, _x_sync) = x.device_ptr(&self.stream);
        let (y_ptr, _y_sync) = y.device_ptr_mut(&self.stream);
        // Row-major y[rows, out] is column-major yᵀ[out, rows] = w · xᵀ:
        // w row-major [out, in] is column-major [in, out] (transposed, lda =
        // in), x row-major [rows, in] is column-major [in, rows] (ldb = in).
        // SAFETY: the handle is bound to `stream`, on which all three buffers
        // are used; their lengths were checked above against m, n, k and the
        // leading dimensions; alpha and beta are f32 as CUBLAS_COMPUTE_32F
        // requires and live until the call returns (it reads them at once in
        // host pointer mode); the input/output type pair is one cublasGemmEx
        // supports with 32F compute (checked above).
        unsafe {
            gemm_ex(
                *self.blas.handle(),
                cublasOperation_t::CUBLAS_OP_T,
                cublasOperation_t::CUBLAS_OP_N,
                m,
                n,
                k,
                (&alpha as *const f32).cast(),
                w_ptr as *const _,
                T::BLAS_TYPE,
                k,
                x_ptr as *const _,
                T::BLAS_TYPE,
                k,
                (&beta as *const f32).cast(),
                y_ptr as *mut _,
                O::BLAS_TYPE,
                m,
                cublasComputeType_t::CUBLAS_COMPUTE_32F,
                cublasGemmAlgo_t::CUBLAS_GEMM_DEFAULT,
            )
        }
        .map_err(|e| CudaKernelError::Blas {
            context: format!("running a {rows}x{in_dim} by {in_dim}x{out_dim} GEMM"),
            message: e.to_string(),
        })
    }
}
