//! Raw FFI bindings to the system's UCX (`libucp`), generated at build time
//! by bindgen from `<ucp/api/ucp.h>` as found by pkg-config `ucx`.
//!
//! Why an in-tree crate: the crates.io `ucx-sys` 0.1.3 bundles a 2016 UCX
//! that no longer builds, and `ucx1-sys` compiles its own vendored UCX from
//! source with autotools (slow, needs a git submodule, and is not the library
//! Debian ships). Binding the installed `libucx-dev` (1.13 on Debian 12)
//! keeps the headers and the linked library the same version and builds in
//! seconds. Only the API `tandem-transport` uses is allow-listed; the few
//! header macros it needs (`UCS_PTR_*`, `ucp_init`) are written in Rust below.

#![allow(non_upper_case_globals, non_camel_case_types, non_snake_case)]
#![allow(clippy::all, missing_docs, rustdoc::all)]

include!(concat!(env!("OUT_DIR"), "/bindings.rs"));

/// `UCS_PTR_IS_ERR`: UCX returns a status code encoded in a pointer when a
/// non-blocking call fails immediately (values in `[UCS_ERR_LAST, 0)`).
#[inline]
pub fn ucs_ptr_is_err(ptr: ucs_status_ptr_t) -> bool {
    (ptr as usize) >= (UCS_ERR_LAST as isize) as usize
}

/// `UCS_PTR_IS_PTR`: a real request handle (neither NULL nor an error).
#[inline]
pub fn ucs_ptr_is_ptr(ptr: ucs_status_ptr_t) -> bool {
    (ptr as usize).wrapping_sub(1) < ((UCS_ERR_LAST as isize) as usize).wrapping_sub(1)
}

/// `UCS_PTR_STATUS`: `UCS_INPROGRESS` for a request handle, else the
/// status encoded in the pointer (`UCS_OK` for NULL).
#[inline]
pub fn ucs_ptr_status(ptr: ucs_status_ptr_t) -> ucs_status_t {
    if ucs_ptr_is_ptr(ptr) {
        UCS_INPROGRESS
    } else {
        ptr as isize as ucs_status_t
    }
}

/// `ucp_init` is a `static inline` wrapper in the header; bindgen cannot
/// emit it, so this repeats it: the API version we compiled against.
///
/// # Safety
/// Same contract as `ucp_init_version`: valid params, config may be null,
/// `context_p` must point to writable storage.
pub unsafe fn ucp_init(
    params: *const ucp_params_t,
    config: *const ucp_config_t,
    context_p: *mut ucp_context_h,
) -> ucs_status_t {
    ucp_init_version(UCP_API_MAJOR, UCP_API_MINOR, params, config, context_p)
}
