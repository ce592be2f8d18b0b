//! First byte: a file of a valid persisted index; the rest: its new
//! contents. Loading it succeeds or is refused; the server keeps serving.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| tandem_server::fuzzing::persisted_index(data));
