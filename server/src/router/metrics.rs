//! The router's own series: where requests went and how often it fell back.

use metrics::{Counter, Histogram};

use crate::api::metrics::Metrics;
use crate::worker::Role;

pub struct RouterMetrics {
    registry: std::sync::Arc<Metrics>,
    pub prefill_retries: Counter,
    pub decode_retries: Counter,
    pub fallback_local_prefill: Counter,
    pub prefill_seconds: Histogram,
    /// Requests prefilled on a prefill worker, and those computed whole on
    /// the decode worker (short uncached part, or a colocated worker).
    pub disaggregated: Counter,
    pub decode_only: Counter,
    /// Prefixes of long prompts prefilled as a stage and pulled early.
    pub pd_stages: Counter,
}

impl RouterMetrics {
    pub fn new(m: &std::sync::Arc<Metrics>) -> Self {
        RouterMetrics {
            registry: m.clone(),
            prefill_retries: m.counter(
                "tandem_router_prefill_retries_total",
                &[],
                "Prefill calls that failed and were retried on another prefill worker.",
            ),
            decode_retries: m.counter(
                "tandem_router_decode_retries_total",
                &[],
                "Decode calls that failed before starting and went to another decode worker.",
            ),
            fallback_local_prefill: m.counter(
                "tandem_router_local_prefill_fallbacks_total",
                &[],
                "Requests whose prompt the decode worker computed because no prefill worker could.",
            ),
            disaggregated: m.counter(
                "tandem_router_requests_total",
                &[("path", "prefill_then_decode")],
                "Requests by path: prefilled remotely then decoded, or computed whole on one worker.",
            ),
            decode_only: m.counter(
                "tandem_router_requests_total",
                &[("path", "decode_only")],
                "Requests by path: prefilled remotely then decoded, or computed whole on one worker.",
            ),
            pd_stages: m.counter(
                "tandem_router_pd_stages_total",
                &[],
                "Prompt prefixes prefilled as a stage and pulled by the decode worker while the rest computed.",
            ),
            prefill_seconds: m.histogram(
                "tandem_router_prefill_seconds",
                "Router-observed time of a remote prefill call (prompt compute plus first token).",
            ),
        }
    }

    /// Counts one routing decision.
    pub fn decision(&self, role: Role, worker: &str) {
        self.registry
            .counter(
                "tandem_router_decisions_total",
                &[("role", role.name()), ("worker", worker)],
                "Requests routed, by role and worker.",
            )
            .increment(1);
    }
}
