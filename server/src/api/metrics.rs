//! `/metrics`: Prometheus text through the `metrics` crate's Prometheus
//! recorder, with vLLM's metric names (so the Gateway API Inference
//! Extension endpoint picker and KEDA read tandem like vLLM) and a
//! `model_name` label on every series; tandem's own extras are `tandem_*`.
//!
//! The recorder is owned here, not installed globally: every server (and
//! every test) has its own registry. Load gauges are read from the backend
//! at scrape time; request counters and latency histograms are fed as
//! outputs stream through the API layer.

use metrics::{Counter, Gauge, Histogram, Key, KeyName, Label, Level, Metadata, Recorder};
use metrics_exporter_prometheus::{
    Matcher, PrometheusBuilder, PrometheusHandle, PrometheusRecorder,
};
use tandem_engine::engine_core::EngineStats;
use tandem_engine::runner::ArenaInfo;
use tandem_engine::sequence::FinishReason;
use tandem_engine::serving::RequestOutput;

const META: Metadata<'static> = Metadata::new("tandem_server::api", Level::INFO, None);

/// Seconds; first tokens on CPU take from milliseconds to minutes.
const TTFT_BUCKETS: &[f64] = &[
    0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0,
    20.0, 40.0, 80.0, 160.0, 640.0,
];
const TPOT_BUCKETS: &[f64] = &[
    0.001, 0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.75, 1.0, 2.5, 5.0,
    10.0, 20.0,
];
const E2E_BUCKETS: &[f64] = &[
    0.01, 0.05, 0.1, 0.3, 0.5, 0.8, 1.0, 1.5, 2.0, 2.5, 5.0, 10.0, 15.0, 20.0, 30.0, 60.0, 120.0,
    240.0, 480.0, 960.0, 1920.0,
];
const TOKEN_BUCKETS: &[f64] = &[
    1.0, 2.0, 5.0, 10.0, 20.0, 50.0, 100.0, 200.0, 500.0, 1000.0, 2000.0, 5000.0, 10000.0, 20000.0,
    50000.0, 100000.0,
];

/// Seconds one KV pull takes (a few blocks over shared memory: tens of µs).
const TRANSFER_BUCKETS: &[f64] = &[
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
    5.0, 10.0,
];

pub struct Metrics {
    handle: PrometheusHandle,
    /// Kept so worker and router code can add their own series.
    recorder: PrometheusRecorder,
    running: Gauge,
    waiting: Gauge,
    kv_usage: Gauge,
    gpu_cache_usage: Gauge,
    prefix_queries: Counter,
    prefix_hits: Counter,
    preemptions: Counter,
    kv_pulls_discarded: Counter,
    pending: Gauge,
    prompt_tokens: Counter,
    generation_tokens: Counter,
    ttft: Histogram,
    tpot: Histogram,
    e2e: Histogram,
    queue: Histogram,
    prefill: Histogram,
    kv_transfer: Histogram,
    first_decode_step: Histogram,
    request_prompt_tokens: Histogram,
    request_generation_tokens: Histogram,
    finished_stop: Counter,
    finished_length: Counter,
    finished_abort: Counter,
    failed: Counter,
    rejected_overload: Counter,
}

impl Metrics {
    pub fn new(model_name: &str) -> Self {
        let mut builder = PrometheusBuilder::new().add_global_label("model_name", model_name);
        for (name, buckets) in [
            ("vllm:time_to_first_token_seconds", TTFT_BUCKETS),
            ("vllm:time_per_output_token_seconds", TPOT_BUCKETS),
            ("vllm:e2e_request_latency_seconds", E2E_BUCKETS),
            ("vllm:request_queue_time_seconds", E2E_BUCKETS),
            ("vllm:request_prefill_time_seconds", E2E_BUCKETS),
            ("vllm:request_prompt_tokens", TOKEN_BUCKETS),
            ("vllm:request_generation_tokens", TOKEN_BUCKETS),
            ("tandem_kv_pull_seconds", TRANSFER_BUCKETS),
            ("tandem_request_kv_transfer_seconds", TRANSFER_BUCKETS),
            ("tandem_request_first_decode_step_seconds", TTFT_BUCKETS),
            ("tandem_router_prefill_seconds", E2E_BUCKETS),
        ] {
            builder = builder
                .set_buckets_for_metric(Matcher::Full(name.into()), buckets)
                .expect("bucket lists are non-empty");
        }
        let recorder = builder.build_recorder();
        let handle = recorder.handle();
        let r = Registrar(&recorder);
        Metrics {
            running: r.gauge(
                "vllm:num_requests_running",
                "Requests running on the engine.",
            ),
            waiting: r.gauge(
                "vllm:num_requests_waiting",
                "Requests waiting to be scheduled.",
            ),
            kv_usage: r.gauge(
                "vllm:kv_cache_usage_perc",
                "KV-cache usage: 1 means 100 percent.",
            ),
            gpu_cache_usage: r.gauge(
                "vllm:gpu_cache_usage_perc",
                "KV-cache usage: 1 means 100 percent (old name of vllm:kv_cache_usage_perc).",
            ),
            prefix_queries: r.counter(
                "vllm:prefix_cache_queries_total",
                &[],
                "Prompt tokens looked up in the prefix cache.",
            ),
            prefix_hits: r.counter(
                "vllm:prefix_cache_hits_total",
                &[],
                "Prompt tokens found in the prefix cache.",
            ),
            preemptions: r.counter(
                "vllm:num_preemptions_total",
                &[],
                "Sequences preempted (their KV recomputed later).",
            ),
            kv_pulls_discarded: r.counter(
                "tandem_kv_pulls_discarded_total",
                &[],
                "KV pulls whose blocks changed while they were read (checksum mismatch); \
                 the decode worker computed those prompts itself.",
            ),
            pending: r.gauge(
                "tandem_requests_pending",
                "Admitted sequences without a first token yet (what --max-waiting bounds).",
            ),
            prompt_tokens: r.counter("vllm:prompt_tokens_total", &[], "Prompt tokens processed."),
            generation_tokens: r.counter("vllm:generation_tokens_total", &[], "Tokens generated."),
            ttft: r.histogram("vllm:time_to_first_token_seconds", "Time to first token."),
            tpot: r.histogram(
                "vllm:time_per_output_token_seconds",
                "Mean time per output token after the first, per request.",
            ),
            e2e: r.histogram("vllm:e2e_request_latency_seconds", "Arrival to last token."),
            queue: r.histogram(
                "vllm:request_queue_time_seconds",
                "Arrival to first scheduled step.",
            ),
            prefill: r.histogram(
                "vllm:request_prefill_time_seconds",
                "First scheduled step to first token.",
            ),
            kv_transfer: r.histogram(
                "tandem_request_kv_transfer_seconds",
                "Disaggregated requests: the decode worker's pull of the prompt KV.",
            ),
            first_decode_step: r.histogram(
                "tandem_request_first_decode_step_seconds",
                "Disaggregated requests: from the pulled KV landing to the decode worker's first token.",
            ),
            request_prompt_tokens: r.histogram("vllm:request_prompt_tokens", "Prompt length."),
            request_generation_tokens: r.histogram(
                "vllm:request_generation_tokens",
                "Tokens generated per request.",
            ),
            finished_stop: r.success("stop"),
            finished_length: r.success("length"),
            finished_abort: r.success("abort"),
            failed: r.counter(
                "tandem_requests_failed_total",
                &[],
                "Sequences that ended with an engine error.",
            ),
            rejected_overload: r.counter(
                "tandem_requests_rejected_total",
                &[("reason", "overloaded")],
                "Requests refused with 429 because the waiting queue was full.",
            ),
            handle,
            recorder,
        }
    }

    /// A counter in this registry (for the worker's and router's series).
    pub fn counter(
        &self,
        name: &'static str,
        labels: &[(&'static str, &str)],
        help: &'static str,
    ) -> Counter {
        self.recorder
            .describe_counter(KeyName::from_const_str(name), None, help.into());
        let labels: Vec<Label> = labels
            .iter()
            .map(|&(k, v)| Label::new(k, v.to_string()))
            .collect();
        self.recorder
            .register_counter(&Key::from_parts(name, labels), &META)
    }

    /// A histogram in this registry.
    pub fn histogram(&self, name: &'static str, help: &'static str) -> Histogram {
        Registrar(&self.recorder).histogram(name, help)
    }

    /// Where the KV cache lives and how big it is, as labels of
    /// `vllm:cache_config_info` (value 1, as vLLM reports its cache config)
    /// and as `tandem_kv_cache_bytes`.
    pub fn describe_kv_arena(&self, arena: &ArenaInfo, block_size: usize) {
        let r = &self.recorder;
        r.describe_gauge(
            KeyName::from_const_str("vllm:cache_config_info"),
            None,
            "The KV cache's configuration, in labels.".into(),
        );
        let labels = vec![
            Label::new("device", arena.device.clone()),
            Label::new("num_gpu_blocks", arena.num_blocks.to_string()),
            Label::new("block_size", block_size.to_string()),
        ];
        r.register_gauge(&Key::from_parts("vllm:cache_config_info", labels), &META)
            .set(1.0);
        r.describe_gauge(
            KeyName::from_const_str("tandem_kv_cache_bytes"),
            Some(metrics::Unit::Bytes),
            "Bytes of the KV cache's arena, by device.".into(),
        );
        let labels = vec![Label::new("device", arena.device.clone())];
        r.register_gauge(&Key::from_parts("tandem_kv_cache_bytes", labels), &META)
            .set(arena.bytes as f64);
    }

    /// The Prometheus text, with load gauges as of now.
    pub fn render(&self, stats: &EngineStats, pending: usize) -> String {
        self.running.set(stats.num_running as f64);
        self.waiting.set(stats.num_waiting as f64);
        self.kv_usage.set(stats.kv_usage);
        self.gpu_cache_usage.set(stats.kv_usage);
        self.prefix_queries.absolute(stats.prefix_cache.queries);
        self.prefix_hits.absolute(stats.prefix_cache.hits);
        self.preemptions.absolute(stats.num_preemptions);
        self.kv_pulls_discarded
            .absolute(stats.num_kv_pulls_discarded);
        self.pending.set(pending as f64);
        self.handle.run_upkeep();
        self.handle.render()
    }

    /// One update of one sequence; `first` for its first.
    pub fn on_output(&self, out: &RequestOutput, first: bool) {
        if first {
            self.prompt_tokens.increment(out.usage.prompt_tokens as u64);
        }
        self.generation_tokens.increment(out.token_ids.len() as u64);
        let Some(reason) = out.finish_reason else {
            return;
        };
        match reason {
            FinishReason::Stop => self.finished_stop.increment(1),
            FinishReason::Length => self.finished_length.increment(1),
            FinishReason::Abort => self.finished_abort.increment(1),
        }
        self.request_prompt_tokens
            .record(out.usage.prompt_tokens as f64);
        self.request_generation_tokens
            .record(out.usage.completion_tokens as f64);
        if let Some(t) = out.timings {
            self.ttft.record(t.time_to_first_token.as_secs_f64());
            self.e2e.record(t.e2e.as_secs_f64());
            self.queue.record(t.queue.as_secs_f64());
            self.prefill.record(t.prefill.as_secs_f64());
            if let Some(d) = t.kv_transfer {
                self.kv_transfer.record(d.as_secs_f64());
            }
            if let Some(d) = t.first_decode_step {
                self.first_decode_step.record(d.as_secs_f64());
            }
            if out.usage.completion_tokens > 1 {
                let decode = t.e2e.saturating_sub(t.time_to_first_token).as_secs_f64();
                self.tpot
                    .record(decode / (out.usage.completion_tokens - 1) as f64);
            }
        }
    }

    /// A sequence dropped before it finished (client gone).
    pub fn on_abort(&self) {
        self.finished_abort.increment(1);
    }

    pub fn on_error(&self) {
        self.failed.increment(1);
    }

    pub fn on_overload(&self) {
        self.rejected_overload.increment(1);
    }
}

/// Registers and describes series on the owned recorder.
struct Registrar<'a>(&'a PrometheusRecorder);

impl Registrar<'_> {
    fn counter(
        &self,
        name: &'static str,
        labels: &[(&'static str, &'static str)],
        help: &'static str,
    ) -> Counter {
        self.0
            .describe_counter(KeyName::from_const_str(name), None, help.into());
        let labels: Vec<Label> = labels.iter().map(|&(k, v)| Label::new(k, v)).collect();
        self.0
            .register_counter(&Key::from_parts(name, labels), &META)
    }

    fn gauge(&self, name: &'static str, help: &'static str) -> Gauge {
        self.0
            .describe_gauge(KeyName::from_const_str(name), None, help.into());
        self.0.register_gauge(&Key::from_static_name(name), &META)
    }

    fn histogram(&self, name: &'static str, help: &'static str) -> Histogram {
        self.0
            .describe_histogram(KeyName::from_const_str(name), None, help.into());
        self.0
            .register_histogram(&Key::from_static_name(name), &META)
    }

    fn success(&self, reason: &'static str) -> Counter {
        self.counter(
            "vllm:request_success_total",
            &[("finished_reason", reason)],
            "Finished sequences by finish reason.",
        )
    }
}
