//! Compiled PTX, kept so NVRTC runs once per kernel source, GPU
//! architecture and NVRTC version: in memory for the life of the process
//! (a second [`CudaKernels::new`](super::CudaKernels::new) is instant) and
//! on disk, so a restarted worker skips the compile. The disk cache is
//! `$TANDEM_KERNEL_CACHE`, else `$XDG_CACHE_HOME/tandem/kernels`, else
//! `~/.cache/tandem/kernels`; `TANDEM_KERNEL_CACHE=off` disables it. An
//! entry is named by a hash of everything that decides its PTX (program
//! text, architecture, options, NVRTC version, header directory), so a
//! changed kernel or toolkit never loads stale code. A missing, unreadable
//! or unwritable cache only costs the compile.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, LazyLock};

use parking_lot::Mutex;
use xxhash_rust::xxh3::Xxh3;

use super::error::CudaKernelError;
use super::nvrtc::{compile, nvrtc_version};
use super::sources::KernelSource;

/// Environment variable naming the disk cache directory (`off`: none).
pub const KERNEL_CACHE_ENV: &str = "TANDEM_KERNEL_CACHE";

static MEMORY: LazyLock<Mutex<HashMap<u64, Arc<str>>>> =
    LazyLock::new(|| Mutex::new(HashMap::new()));

/// The PTX of `source` for `arch`, from a cache or compiled now.
pub(crate) fn ptx(
    source: &'static KernelSource,
    arch: &str,
    include_dir: &Path,
) -> Result<Arc<str>, CudaKernelError> {
    let key = key(source, arch, include_dir)?;
    if let Some(ptx) = MEMORY.lock().get(&key) {
        return Ok(ptx.clone());
    }
    let file = cache_dir().map(|d| d.join(format!("{}-{arch}-{key:016x}.ptx", source.name)));
    let cached = file
        .as_deref()
        .and_then(|f| std::fs::read_to_string(f).ok())
        .filter(|ptx| !ptx.is_empty());
    let ptx: Arc<str> = match cached {
        Some(ptx) => ptx.into(),
        None => {
            let ptx: Arc<str> = compile(source, arch, include_dir, &[])?.ptx.into();
            if let Some(f) = &file {
                store(f, &ptx);
            }
            ptx
        }
    };
    MEMORY.lock().insert(key, ptx.clone());
    Ok(ptx)
}

fn key(source: &KernelSource, arch: &str, include_dir: &Path) -> Result<u64, CudaKernelError> {
    let (major, minor) = nvrtc_version()?;
    let mut h = Xxh3::new();
    for part in [
        source.program().as_bytes(),
        arch.as_bytes(),
        include_dir.as_os_str().as_encoded_bytes(),
        &major.to_le_bytes(),
        &minor.to_le_bytes(),
    ] {
        h.update(&(part.len() as u64).to_le_bytes());
        h.update(part);
    }
    Ok(h.digest())
}

fn cache_dir() -> Option<PathBuf> {
    match std::env::var_os(KERNEL_CACHE_ENV) {
        Some(v) if v == "off" => None,
        Some(v) if !v.is_empty() => Some(PathBuf::from(v)),
        _ => std::env::var_os("XDG_CACHE_HOME")
            .filter(|v| !v.is_empty())
            .map(PathBuf::from)
            .or_else(|| std::env::var_os("HOME").map(|h| Path::new(&h).join(".cache")))
            .map(|d| d.join("tandem").join("kernels")),
    }
}

/// Writes `ptx` to `file` through a temporary name, so a reader never sees
/// half a file; any failure leaves the cache as it was.
fn store(file: &Path, ptx: &str) {
    let Some(dir) = file.parent() else { return };
    let tmp = dir.join(format!(".{}.{}", std::process::id(), next_suffix()));
    let written = std::fs::create_dir_all(dir)
        .and_then(|()| std::fs::write(&tmp, ptx))
        .and_then(|()| std::fs::rename(&tmp, file));
    if written.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
}

/// Distinguishes two threads of one process writing at once.
fn next_suffix() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static NEXT: AtomicU64 = AtomicU64::new(0);
    NEXT.fetch_add(1, Ordering::Relaxed)
}
