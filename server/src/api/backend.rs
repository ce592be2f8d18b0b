//! Where sequences are generated, behind one trait: the API layer (handlers,
//! validation, SSE, metrics) only talks to a [`Backend`]. The colocated
//! worker's backend is the engine itself ([`EngineHandle`]); the P/D router
//! implements the same trait over prefill and decode workers.

use futures::stream::{BoxStream, StreamExt};
use tandem_engine::engine_core::EngineStats;
use tandem_engine::serving::{EngineHandle, RequestOutput, ServingError, ServingRequest};

/// Updates of one sequence; the last `Ok` carries `finish_reason`.
pub type OutputStream = BoxStream<'static, Result<RequestOutput, ServingError>>;

pub trait Backend: Send + Sync + 'static {
    /// Starts one sequence. Dropping the stream before it ends aborts the
    /// sequence and frees its KV blocks (a client that went away).
    fn generate(&self, request: ServingRequest) -> OutputStream;

    /// Load as of now, for `/metrics`.
    fn stats(&self) -> EngineStats;

    /// Stops generating; sequences still running end with `Shutdown`.
    fn shutdown(&self);

    /// False once the backend can no longer generate (engine thread gone).
    fn is_healthy(&self) -> bool;
}

impl Backend for EngineHandle {
    fn generate(&self, request: ServingRequest) -> OutputStream {
        let stream = self.add_request(request);
        // The `RequestStream` lives inside the returned stream, so dropping
        // that drops it, which aborts the request in the engine.
        futures::stream::unfold(
            stream,
            |mut s| async move { s.next().await.map(|o| (o, s)) },
        )
        .boxed()
    }

    fn stats(&self) -> EngineStats {
        EngineHandle::stats(self)
    }

    fn shutdown(&self) {
        EngineHandle::shutdown(self)
    }

    fn is_healthy(&self) -> bool {
        self.is_alive()
    }
}
