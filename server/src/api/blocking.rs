//! Work that grows with the prompt (tokenizing, rendering chat templates,
//! counting tokens for RAG context) runs on Tokio's blocking pool, never
//! on the runtime's threads: a 100k-token prompt takes a good part of a
//! second to tokenize, and every other connection would wait for it. TGI's
//! router keeps its tokenizers off the async threads the same way.

use super::errors::ApiError;

/// Runs `work` on the blocking pool. A panic in it answers 500, as a panic
/// in a handler does.
pub async fn run<T: Send + 'static>(
    work: impl FnOnce() -> Result<T, ApiError> + Send + 'static,
) -> Result<T, ApiError> {
    tokio::task::spawn_blocking(work)
        .await
        .map_err(|e| ApiError::internal(format!("a blocking task failed: {e}")))?
}
