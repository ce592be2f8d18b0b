//! GPU test setup: the kernels compiled for GPU 0, or `None` (with the
//! reason printed) on a machine without a CUDA driver or GPU, so the GPU
//! tests skip there (CI, developer laptops) and run where there is one.

use candle_core::{DType, Tensor, WithDType};
use cudarc::driver::CudaSlice;
use tandem_kernels::cuda::{
    driver_available, nvrtc_available, open_device, CudaElement, CudaKernels,
};

/// The kernels on GPU 0, or `None` after printing why the test is skipped.
/// With a GPU but no NVRTC the test fails: that machine is meant to run them.
pub fn kernels() -> Option<CudaKernels> {
    if !driver_available() {
        eprintln!("skipped: no CUDA driver (libcuda.so) on this machine");
        return None;
    }
    let ctx = match open_device(0) {
        Ok(ctx) => ctx,
        Err(e) => {
            eprintln!("skipped: no usable GPU: {e}");
            return None;
        }
    };
    assert!(
        nvrtc_available(),
        "a GPU is present but libnvrtc is not on LD_LIBRARY_PATH, so the kernels cannot be compiled"
    );
    Some(CudaKernels::new(ctx.default_stream()).expect("compiling and loading the CUDA kernels"))
}

/// An element type on both sides: candle on the CPU, the kernels on the GPU.
pub trait Elem: CudaElement + WithDType {}
impl<T: CudaElement + WithDType> Elem for T {}

pub fn upload<T: Elem>(k: &CudaKernels, t: &Tensor) -> CudaSlice<T> {
    let host: Vec<T> = t.flatten_all().unwrap().to_vec1().unwrap();
    k.stream().clone_htod(&host).unwrap()
}

pub fn upload_slice<T: cudarc::driver::DeviceRepr>(k: &CudaKernels, xs: &[T]) -> CudaSlice<T> {
    k.stream().clone_htod(xs).unwrap()
}

/// Copies `n` elements back, widened to f32 (waits for the stream).
pub fn download<T: Elem>(k: &CudaKernels, s: &CudaSlice<T>, n: usize) -> Vec<f32> {
    let host: Vec<T> = k.stream().clone_dtoh(s).unwrap();
    host[..n].iter().map(|x| x.to_f64() as f32).collect()
}

/// Dtype of `T` for building CPU tensors.
pub fn dtype<T: Elem>() -> DType {
    T::DTYPE
}
