//! UCX status codes as Rust errors.

use std::ffi::CStr;

use tandem_ucx_sys as sys;

use crate::error::TransportError;

/// `ucs_status_string`, owned.
pub(crate) fn describe(status: sys::ucs_status_t) -> String {
    // SAFETY: ucs_status_string returns a pointer to a static NUL-terminated
    // string for every status value (unknown ones included).
    let s = unsafe { CStr::from_ptr(sys::ucs_status_string(status)) };
    s.to_string_lossy().into_owned()
}

/// `Ok` for `UCS_OK`, else a `TransportError::Ucx` naming the call.
pub(crate) fn check(call: &'static str, status: sys::ucs_status_t) -> Result<(), TransportError> {
    if status == sys::UCS_OK {
        Ok(())
    } else {
        Err(TransportError::Ucx {
            call,
            status: describe(status),
        })
    }
}
