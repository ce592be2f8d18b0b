//! KAITO RAGEngine's `rag_*` metric families (names, labels and buckets of
//! `presets/ragengine/metrics/prometheus_metrics.py`), on a recorder of
//! their own whose text `/metrics` appends to the vLLM families. They carry
//! no `model_name` label, as in KAITO.

use metrics::{Key, KeyName, Label, Level, Metadata, Recorder, SharedString, Unit};
use metrics_exporter_prometheus::{
    Matcher, PrometheusBuilder, PrometheusHandle, PrometheusRecorder,
};

const META: Metadata<'static> = Metadata::new("tandem_server::rag", Level::INFO, None);

/// prometheus_client's default buckets (KAITO's route latencies use them).
const DEFAULT_BUCKETS: &[f64] = &[
    0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0,
];
const OPERATION_BUCKETS: &[f64] = &[
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];
const COUNT_BUCKETS: &[f64] = &[
    0.0, 1.0, 2.0, 3.0, 5.0, 10.0, 20.0, 50.0, 100.0, 200.0, 300.0,
];
const SCORE_BUCKETS: &[f64] = &[0.1, 0.2, 0.3, 0.35, 0.4, 0.45, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0];
const HYBRID_LATENCY_BUCKETS: &[f64] = &[0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0];

/// The API routes KAITO times, with their metric name stems.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Route {
    Index,
    ListIndexes,
    ListDocuments,
    UpdateDocuments,
    DeleteDocuments,
    Retrieve,
    Persist,
    Load,
    DeleteIndex,
    Chat,
}

impl Route {
    fn names(self) -> (&'static str, &'static str, &'static str) {
        use Route::*;
        match self {
            Index => (
                "rag_index_latency_seconds",
                "rag_index_requests_total",
                "'/index'",
            ),
            ListIndexes => (
                "rag_indexes_latency_seconds",
                "rag_indexes_requests_total",
                "'/indexes'",
            ),
            ListDocuments => (
                "rag_indexes_document_latency_seconds",
                "rag_indexes_document_requests_total",
                "get '/indexes/{index_name}/documents'",
            ),
            UpdateDocuments => (
                "rag_indexes_update_document_latency_seconds",
                "rag_indexes_update_document_requests_total",
                "post '/indexes/{index_name}/documents'",
            ),
            DeleteDocuments => (
                "rag_indexes_delete_document_latency_seconds",
                "rag_indexes_delete_document_requests_total",
                "'/indexes/{index_name}/documents/delete'",
            ),
            Retrieve => (
                "rag_indexes_retrieve_latency_seconds",
                "rag_indexes_retrieve_requests_total",
                "post '/retrieve'",
            ),
            Persist => (
                "rag_persist_latency_seconds",
                "rag_persist_requests_total",
                "'/persist/{index_name}'",
            ),
            Load => (
                "rag_load_latency_seconds",
                "rag_load_requests_total",
                "'/load/{index_name}'",
            ),
            DeleteIndex => (
                "rag_delete_index_latency_seconds",
                "rag_delete_index_requests_total",
                "delete '/indexes/{index_name}'",
            ),
            Chat => (
                "rag_chat_latency_seconds",
                "rag_chat_requests_total",
                "'/v1/chat/completions'",
            ),
        }
    }

    const ALL: [Route; 10] = [
        Route::Index,
        Route::ListIndexes,
        Route::ListDocuments,
        Route::UpdateDocuments,
        Route::DeleteDocuments,
        Route::Retrieve,
        Route::Persist,
        Route::Load,
        Route::DeleteIndex,
        Route::Chat,
    ];
}

pub struct RagMetrics {
    recorder: PrometheusRecorder,
    handle: PrometheusHandle,
}

impl Default for RagMetrics {
    fn default() -> Self {
        Self::new()
    }
}

fn status(ok: bool) -> &'static str {
    if ok {
        "success"
    } else {
        "failure"
    }
}

impl RagMetrics {
    pub fn new() -> Self {
        let mut b = PrometheusBuilder::new()
            .set_buckets(DEFAULT_BUCKETS)
            .expect("non-empty");
        for (name, buckets) in [
            (
                "rag_vector_store_operation_latency_seconds",
                OPERATION_BUCKETS,
            ),
            ("rag_retrieve_result_count", COUNT_BUCKETS),
            ("rag_lowest_source_score", SCORE_BUCKETS),
            ("rag_avg_source_score", SCORE_BUCKETS),
            (
                "rag_hybrid_retrieve_latency_seconds",
                HYBRID_LATENCY_BUCKETS,
            ),
        ] {
            b = b
                .set_buckets_for_metric(Matcher::Full(name.into()), buckets)
                .expect("non-empty");
        }
        let recorder = b.build_recorder();
        let handle = recorder.handle();
        let m = RagMetrics { recorder, handle };
        for r in Route::ALL {
            let (lat, total, path) = r.names();
            m.describe_h(lat, format!("Time to call {path} API in seconds"));
            m.describe_c(
                total,
                format!("Count of successful/failed calling {path} requests"),
            );
        }
        m.describe_h(
            "rag_embedding_latency_seconds",
            "Time to embed in seconds".into(),
        );
        m.describe_c(
            "rag_embedding_requests_total",
            "Count of successful/failed embed requests".into(),
        );
        m.describe_h(
            "rag_vector_store_operation_latency_seconds",
            "Latency of vector store backend operations (insert, query, delete)".into(),
        );
        m.describe_h(
            "rag_retrieve_result_count",
            "Number of document chunks returned per retrieve call".into(),
        );
        m.describe_h(
            "rag_lowest_source_score",
            "Score of the lowest scoring source node".into(),
        );
        m.describe_h(
            "rag_avg_source_score",
            "Average score of all retrieved source documents in RAG queries".into(),
        );
        m.describe_c(
            "rag_hybrid_search_mode_total",
            "Number of retrieve calls by search mode".into(),
        );
        m.describe_h(
            "rag_hybrid_retrieve_latency_seconds",
            "End-to-end latency of hybrid retrieve (dense+sparse encode, query, fusion)".into(),
        );
        m.describe_c(
            "rag_wal_bytes_written_total",
            "Bytes appended to the indexes' write-ahead logs (tandem)".into(),
        );
        m.describe_c(
            "rag_wal_fsyncs_total",
            "fsyncs of the indexes' write-ahead logs, one per acknowledged write (tandem)".into(),
        );
        m.describe_c(
            "rag_wal_compactions_total",
            "Snapshots written to empty a write-ahead log (tandem)".into(),
        );
        m
    }

    fn describe_h(&self, name: &'static str, help: String) {
        self.recorder.describe_histogram(
            KeyName::from_const_str(name),
            Some(Unit::Seconds),
            SharedString::from(help),
        );
    }

    fn describe_c(&self, name: &'static str, help: String) {
        self.recorder.describe_counter(
            KeyName::from_const_str(name),
            None,
            SharedString::from(help),
        );
    }

    fn histogram(&self, name: &'static str, labels: &[(&'static str, &'static str)], value: f64) {
        let labels: Vec<Label> = labels.iter().map(|&(k, v)| Label::new(k, v)).collect();
        self.recorder
            .register_histogram(&Key::from_parts(name, labels), &META)
            .record(value);
    }

    fn counter(&self, name: &'static str, labels: &[(&'static str, &'static str)]) {
        self.counter_by(name, labels, 1);
    }

    fn counter_by(&self, name: &'static str, labels: &[(&'static str, &'static str)], n: u64) {
        let labels: Vec<Label> = labels.iter().map(|&(k, v)| Label::new(k, v)).collect();
        self.recorder
            .register_counter(&Key::from_parts(name, labels), &META)
            .increment(n);
    }

    /// One fsynced append of `bytes` to a write-ahead log.
    pub fn on_wal_append(&self, bytes: u64) {
        self.counter_by("rag_wal_bytes_written_total", &[], bytes);
        self.counter("rag_wal_fsyncs_total", &[]);
    }

    /// A snapshot that let a write-ahead log start over.
    pub fn on_wal_compaction(&self) {
        self.counter("rag_wal_compactions_total", &[]);
    }

    /// One API call: `rag_<route>_requests_total` and `_latency_seconds`.
    pub fn on_route(&self, route: Route, ok: bool, seconds: f64) {
        let (lat, total, _) = route.names();
        self.histogram(lat, &[("status", status(ok))], seconds);
        self.counter(total, &[("status", status(ok))]);
    }

    pub fn on_embed(&self, ok: bool, seconds: f64) {
        let labels = [("status", status(ok)), ("mode", "local")];
        self.histogram("rag_embedding_latency_seconds", &labels, seconds);
        self.counter("rag_embedding_requests_total", &labels);
    }

    /// `operation`: insert, query or delete.
    pub fn on_store_op(&self, operation: &'static str, ok: bool, seconds: f64) {
        let labels = [
            ("operation", operation),
            ("status", if ok { "success" } else { "error" }),
        ];
        self.histogram(
            "rag_vector_store_operation_latency_seconds",
            &labels,
            seconds,
        );
    }

    pub fn on_retrieve(&self, scores: &[f32], seconds: f64) {
        self.histogram("rag_retrieve_result_count", &[], scores.len() as f64);
        self.counter("rag_hybrid_search_mode_total", &[("search_mode", "hybrid")]);
        self.histogram("rag_hybrid_retrieve_latency_seconds", &[], seconds);
        if let Some(min) = scores.iter().copied().reduce(f32::min) {
            self.histogram("rag_lowest_source_score", &[], min as f64);
            let avg = scores.iter().sum::<f32>() / scores.len() as f32;
            self.histogram("rag_avg_source_score", &[], avg as f64);
        }
    }

    pub fn render(&self) -> String {
        self.handle.run_upkeep();
        self.handle.render()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kaito_family_names_and_labels_render() {
        let m = RagMetrics::new();
        m.on_route(Route::Retrieve, true, 0.01);
        m.on_route(Route::DeleteIndex, false, 0.5);
        m.on_retrieve(&[0.5, 0.9], 0.002);
        m.on_wal_append(100);
        m.on_wal_append(28);
        let text = m.render();
        for needle in [
            "rag_indexes_retrieve_requests_total{status=\"success\"} 1",
            "rag_delete_index_requests_total{status=\"failure\"} 1",
            "rag_indexes_retrieve_latency_seconds_bucket{status=\"success\",le=\"0.025\"} 1",
            "rag_retrieve_result_count_sum 2",
            "rag_hybrid_search_mode_total{search_mode=\"hybrid\"} 1",
            "rag_wal_bytes_written_total 128",
            "rag_wal_fsyncs_total 2",
        ] {
            assert!(text.contains(needle), "missing {needle} in\n{text}");
        }
    }
}
