//! Is the peer process still there? Used for connections whose transports
//! cannot report a dead peer (UCX 1.13 shared memory). Shared memory only
//! connects processes of one host, where the peer's pid answers the
//! question; the host id makes sure the pid is one of ours to ask about.

use std::sync::OnceLock;

/// A hash of this boot's `/proc/sys/kernel/random/boot_id`, 0 if unknown.
pub(crate) fn host_id() -> u64 {
    static ID: OnceLock<u64> = OnceLock::new();
    *ID.get_or_init(|| {
        std::fs::read("/proc/sys/kernel/random/boot_id")
            .map(|b| xxhash_rust::xxh3::xxh3_64(&b).max(1))
            .unwrap_or(0)
    })
}

/// False once process `pid` of this host has exited.
pub(crate) fn process_alive(pid: u32) -> bool {
    let Ok(pid) = libc::pid_t::try_from(pid) else {
        return true;
    };
    // SAFETY: signal 0 only checks for existence and permission.
    if unsafe { libc::kill(pid, 0) } == 0 {
        return true;
    }
    std::io::Error::last_os_error().raw_os_error() != Some(libc::ESRCH)
}
