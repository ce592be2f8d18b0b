//! The `tandem` server: the command line ([`cli`]), the OpenAI API, the P/D
//! router, the prefill/decode workers and the bundled RAG module ([`rag`]).
//! The binary (`src/main.rs`) only calls [`cli::main`]; the library exists
//! so the examples can use the RAG pieces they measure, and the fuzz
//! targets (`fuzz/`, feature `fuzzing`) can reach the parsers.

mod api;
pub mod cli;
#[cfg(any(test, feature = "fuzzing"))]
#[doc(hidden)]
pub mod fuzzing;
pub mod rag;
mod router;
mod worker;
