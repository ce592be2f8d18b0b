//! The bytes as a worker wire body: they parse or are refused.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| tandem_server::fuzzing::worker_body(data));
