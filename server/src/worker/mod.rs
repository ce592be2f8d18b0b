//! A worker's internal API, next to the OpenAI API on the same port: the
//! router asks a prefill worker to compute a prompt and hold its KV, asks a
//! decode worker to pull that KV and go on, and follows every worker's
//! load and prefix cache. Only the router should reach these routes
//! (`--internal-token`, and workers bind 127.0.0.1 unless told otherwise).

mod leases;
mod metrics;
mod routes;
mod transfer;
pub mod wire;

use std::sync::Arc;

use tandem_engine::runner::ArenaInfo;
use tandem_engine::serving::EngineHandle;

pub use leases::Leases;
pub use metrics::{KvMetrics, RequestMetrics};
pub use routes::routes;
pub use transfer::{build_core_over_agent, start_agent, NotificationListener, TransportLoader};

/// What a worker process does.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Role {
    /// Prefill and decode in one engine (serves the OpenAI API itself too).
    Both,
    /// Computes prompts and holds their KV for decode workers.
    Prefill,
    /// Pulls prompt KV from prefill workers and generates.
    Decode,
}

impl Role {
    pub fn name(self) -> &'static str {
        match self {
            Role::Both => "both",
            Role::Prefill => "prefill",
            Role::Decode => "decode",
        }
    }
}

/// Shared by the internal handlers.
#[derive(Clone)]
pub struct WorkerState {
    pub role: Role,
    pub engine: EngineHandle,
    pub block_size: usize,
    /// The KV arena, as `/internal/status` reports it.
    pub arena: ArenaInfo,
    /// This worker's transfer-agent metadata (prefill role): goes into
    /// every KV handle it gives out.
    pub agent_metadata: Option<Arc<[u8]>>,
    pub leases: Arc<Leases>,
    /// Counts the requests each internal route accepted.
    pub requests: Arc<RequestMetrics>,
    pub token: Option<Arc<str>>,
    /// True once the worker is shutting down: endless streams (KV events)
    /// end so the graceful drain does not wait on them.
    pub stopping: tokio::sync::watch::Receiver<bool>,
}

#[cfg(test)]
mod fuzz_tests;
