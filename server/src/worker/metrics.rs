//! The worker's KV-transfer series, in the same registry as the API's.

use metrics::{Counter, Histogram};

use crate::api::metrics::Metrics;

pub struct KvMetrics {
    pub blocks_pulled: Counter,
    pub blocks_reused: Counter,
    pub bytes_pulled: Counter,
    pub pull_seconds: Histogram,
    pub pull_failures: Counter,
    pub leases_released: Counter,
    pub leases_expired: Counter,
}

impl KvMetrics {
    pub fn new(m: &Metrics) -> Self {
        KvMetrics {
            blocks_pulled: m.counter(
                "tandem_kv_blocks_pulled_total",
                &[],
                "KV blocks this decode worker read from prefill workers.",
            ),
            blocks_reused: m.counter(
                "tandem_kv_blocks_reused_total",
                &[],
                "Prompt KV blocks a decode worker had cached and did not pull.",
            ),
            bytes_pulled: m.counter(
                "tandem_kv_pull_bytes_total",
                &[],
                "Bytes of KV read from prefill workers.",
            ),
            pull_seconds: m.histogram(
                "tandem_kv_pull_seconds",
                "Time to pull one request's missing KV blocks.",
            ),
            pull_failures: m.counter(
                "tandem_kv_pull_failures_total",
                &[],
                "KV pulls that failed (the decode worker computed the prompt itself).",
            ),
            leases_released: m.counter(
                "tandem_kv_leases_released_total",
                &[],
                "Held prompt KV released after a decode worker pulled it or the router gave it up.",
            ),
            leases_expired: m.counter(
                "tandem_kv_leases_expired_total",
                &[],
                "Held prompt KV freed because nobody pulled it within --kv-lease-timeout.",
            ),
        }
    }
}
