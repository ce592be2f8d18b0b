//! First byte: a KAITO route (or chat with index_name); the rest: the
//! body. The answer is a success or a client error.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| tandem_server::fuzzing::rag_request(data));
