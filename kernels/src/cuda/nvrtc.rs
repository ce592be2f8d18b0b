//! Compiling the kernel sources with NVRTC, loaded at run time by cudarc
//! (`libnvrtc.so*` on the loader's path). Works with no GPU present, which
//! is how CI checks every kernel: `tests/cuda_compile.rs`.

use std::ffi::{c_char, CStr, CString};
use std::path::{Path, PathBuf};

use cudarc::nvrtc::{result, sys};

use super::error::CudaKernelError;
use super::sources::KernelSource;

/// Environment variable naming a directory that holds `cuda_bf16.h`.
pub const INCLUDE_ENV: &str = "TANDEM_CUDA_INCLUDE";

/// Whether libnvrtc can be loaded. Every other function here needs it:
/// cudarc panics on first use when the library is missing, so callers check
/// this first ([`compile`] does).
pub fn nvrtc_available() -> bool {
    // SAFETY: only tries to dlopen the candidate library names; no symbol
    // is called.
    unsafe { sys::is_culib_present() }
}

/// NVRTC's version as (major, minor).
pub fn nvrtc_version() -> Result<(i32, i32), CudaKernelError> {
    if !nvrtc_available() {
        return Err(CudaKernelError::NvrtcNotFound);
    }
    let (mut major, mut minor) = (0, 0);
    // SAFETY: the library is present; both pointers are valid for writes.
    let status = unsafe { sys::nvrtcVersion(&mut major, &mut minor) };
    status.result().map_err(|e| CudaKernelError::Compile {
        source_name: "nvrtcVersion",
        arch: String::new(),
        status: format!("{e:?}"),
        log: String::new(),
    })?;
    Ok((major, minor))
}

/// The directory with `cuda_bf16.h` (and the `cuda_fp16.h` it includes):
/// `$TANDEM_CUDA_INCLUDE`, else `$CUDA_HOME/include`, `$CUDA_PATH/include`,
/// `/usr/local/cuda/include`, the first that has the header.
pub fn cuda_include_dir() -> Result<PathBuf, CudaKernelError> {
    let mut searched = Vec::new();
    let from_env =
        |var: &str, suffix: &str| std::env::var_os(var).map(|v| PathBuf::from(v).join(suffix));
    let candidates = [
        from_env(INCLUDE_ENV, ""),
        from_env("CUDA_HOME", "include"),
        from_env("CUDA_PATH", "include"),
        Some(PathBuf::from("/usr/local/cuda/include")),
    ];
    for dir in candidates.into_iter().flatten() {
        if dir.join("cuda_bf16.h").is_file() {
            return Ok(dir);
        }
        searched.push(dir);
    }
    Err(CudaKernelError::HeadersNotFound { searched })
}

/// One source compiled to PTX.
#[derive(Debug)]
pub struct Compiled {
    pub source: &'static KernelSource,
    /// `--gpu-architecture` it was compiled for (`compute_90`, `sm_90`, ...).
    pub arch: String,
    pub ptx: String,
    /// NVRTC's log: warnings, and for an `sm_XX` target with
    /// `-Xptxas=-v`, ptxas's register and spill report per kernel.
    pub log: String,
}

impl Compiled {
    /// Log lines that are compiler warnings.
    pub fn warnings(&self) -> Vec<&str> {
        self.log.lines().filter(|l| l.contains("warning")).collect()
    }
}

/// Frees the NVRTC program on every path out of [`compile`].
struct Program(sys::nvrtcProgram);

impl Drop for Program {
    fn drop(&mut self) {
        // SAFETY: the program was created by `create_program` and is
        // destroyed exactly once, here. A failure leaks it; nothing to do.
        let _ = unsafe { result::destroy_program(self.0) };
    }
}

fn chars_to_string(chars: &[c_char]) -> String {
    // NVRTC's buffers end with a NUL; anything after it is ignored.
    let bytes: Vec<u8> = chars.iter().map(|&c| c as u8).collect();
    match CStr::from_bytes_until_nul(&bytes) {
        Ok(s) => s.to_string_lossy().into_owned(),
        Err(_) => String::from_utf8_lossy(&bytes).into_owned(),
    }
}

/// Compiles `source` for `arch` (`compute_XY` for PTX the driver finishes
/// at load time, `sm_XY` to also run ptxas inside NVRTC), with
/// `include_dir` for the CUDA headers and `extra_options` appended (e.g.
/// `-Xptxas=-v`). Fails with the compiler log on any error.
pub fn compile(
    source: &'static KernelSource,
    arch: &str,
    include_dir: &Path,
    extra_options: &[&str],
) -> Result<Compiled, CudaKernelError> {
    if !nvrtc_available() {
        return Err(CudaKernelError::NvrtcNotFound);
    }
    let fail = |status: String, log: String| CudaKernelError::Compile {
        source_name: source.name,
        arch: arch.to_string(),
        status,
        log,
    };
    let code = CString::new(source.program())
        .map_err(|_| fail("bad source".into(), "the source contains a NUL byte".into()))?;
    let name = CString::new(source.name).map_err(|_| {
        fail(
            "bad name".into(),
            "the file name contains a NUL byte".into(),
        )
    })?;
    let mut options = vec![
        format!("--gpu-architecture={arch}"),
        "--std=c++17".to_string(),
        format!("--include-path={}", include_dir.display()),
    ];
    options.extend(extra_options.iter().map(|o| o.to_string()));

    let program = Program(
        result::create_program(&code, Some(name.as_c_str()))
            .map_err(|e| fail(format!("{e:?}"), String::new()))?,
    );
    // SAFETY: `program` is a live NVRTC program; `options` outlive the call
    // (cudarc copies them into C strings for its duration).
    let compiled = unsafe { result::compile_program(program.0, &options) };
    // SAFETY: the program is live; the log exists after any compile attempt.
    let log = unsafe { result::get_program_log(program.0) }
        .map(|chars| chars_to_string(&chars))
        .unwrap_or_default();
    if let Err(e) = compiled {
        return Err(fail(format!("{e:?}"), log));
    }
    // SAFETY: the program compiled successfully, so its PTX exists.
    let ptx =
        unsafe { result::get_ptx(program.0) }.map_err(|e| fail(format!("{e:?}"), log.clone()))?;
    Ok(Compiled {
        source,
        arch: arch.to_string(),
        ptx: chars_to_string(&ptx),
        log,
    })
}
