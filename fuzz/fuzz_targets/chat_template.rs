//! The bytes as a user message: rendered by the demo chat template,
//! they come out verbatim.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| tandem_server::fuzzing::chat_template(data));
