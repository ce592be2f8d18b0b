//! First byte: chat, completions or tokenize; the rest: the body. The
//! answer is a success or an OpenAI error object with a message.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| tandem_server::fuzzing::openai_request(data));
