//! The P/D router: the OpenAI API layer's [`Backend`] over prefill and
//! decode workers. It tokenizes and validates like a colocated server (the
//! same handlers), routes each request by prefix overlap and load, and
//! turns the workers' tokens into text itself, so P/D and colocated serving
//! give the same output.

mod client;
mod flow;
mod metrics;
mod pool;
pub mod scoring;
mod stages;

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Instant;

use futures::stream::StreamExt;
use parking_lot::Mutex;
use rand::SeedableRng;
use tandem_engine::engine_core::EngineStats;
use tandem_engine::kv_cache::{BlockHash, PrefixCacheStats};
use tandem_engine::serving::{OutputBuilder, ServingError, ServingRequest};
use tandem_engine::stop::StopMatcher;
use tandem_engine::tokenizer::Tokenizer;

use crate::api::backend::{Backend, OutputStream};
use crate::api::metrics::Metrics;
use crate::worker::Role;
pub use client::WorkerClient;
pub use metrics::RouterMetrics;
pub use pool::{Seed, Worker, WorkerPool};
use scoring::{Candidate, Routing, Score, Weights};

#[derive(Clone, Debug)]
pub struct RouterConfig {
    pub routing: Routing,
    pub weights: Weights,
    /// Prefill remotely only when at least this many prompt tokens are not
    /// cached on the chosen decode worker (0: always).
    pub pd_threshold: usize,
    /// Prefill longer prompts in stages of this many tokens, the decode
    /// worker pulling each finished prefix meanwhile (0: in one piece).
    pub pd_stage_tokens: usize,
}

/// A worker picked for a request, and how it scored.
pub struct Choice {
    pub worker: Arc<Worker>,
    pub score: Score,
}

pub struct RouterInner {
    pub pool: Arc<WorkerPool>,
    pub config: RouterConfig,
    pub block_size: usize,
    pub metrics: RouterMetrics,
    rng: Mutex<rand::rngs::StdRng>,
    round_robin: AtomicUsize,
}

impl RouterInner {
    /// The best healthy worker for `role` not in `exclude`, with its score.
    pub fn choose(&self, role: Role, hashes: &[BlockHash], exclude: &[String]) -> Option<Choice> {
        let workers: Vec<Arc<Worker>> = self
            .pool
            .healthy(role)
            .into_iter()
            .filter(|w| !exclude.contains(&w.url))
            .collect();
        if workers.is_empty() {
            return None;
        }
        if self.config.routing == Routing::RoundRobin {
            let i = self.round_robin.fetch_add(1, Ordering::Relaxed) % workers.len();
            let worker = workers[i].clone();
            let overlap = scoring::overlap(hashes, &worker.cached());
            self.metrics.decision(role, &worker.url);
            let score = Score {
                total: 0.0,
                overlap_blocks: overlap,
                prefix: 0.0,
                queue: 0.0,
                kv: 0.0,
            };
            return Some(Choice { worker, score });
        }
        let weights = match self.config.routing {
            Routing::LeastLoaded => Weights {
                prefix: 0.0,
                ..self.config.weights
            },
            _ => self.config.weights,
        };
        let caches: Vec<_> = workers.iter().map(|w| w.cached()).collect();
        let candidates: Vec<Candidate> = workers
            .iter()
            .zip(&caches)
            .map(|(w, c)| Candidate {
                queue: w.queue(),
                kv_usage: w.kv_usage(),
                cached: c,
            })
            .collect();
        let scoring::Pick { chosen: i, scores } = {
            let mut rng = self.rng.lock();
            scoring::pick(hashes, &candidates, &weights, &mut *rng)?
        };
        drop(candidates);
        drop(caches);
        tracing::debug!(
            role = role.name(),
            chosen = workers[i].url,
            scores = ?workers.iter().zip(&scores).map(|(w, s)| (w.url.as_str(), *s)).collect::<Vec<_>>(),
            prompt_blocks = hashes.len(),
            "routing decision"
        );
        self.metrics.decision(role, &workers[i].url);
        Some(Choice {
            worker: workers[i].clone(),
            score: scores[i],
        })
    }

    /// Gives a prefill lease back without waiting (the request ended before
    /// a decode worker pulled it).
    pub fn release_later(&self, worker: Arc<Worker>, lease: u64) {
        let client = self.pool.client().clone();
        tokio::spawn(async move {
            if let Err(e) = client.release(&worker.url, lease).await {
                tracing::debug!(error = %e, lease, "releasing a KV lease failed; it expires on its own");
            }
        });
    }
}

/// The router as the API layer's backend.
pub struct RouterBackend {
    inner: Arc<RouterInner>,
    tokenizer: Arc<Tokenizer>,
    stopped: AtomicBool,
}

impl RouterBackend {
    pub fn new(
        pool: Arc<WorkerPool>,
        config: RouterConfig,
        block_size: usize,
        tokenizer: Arc<Tokenizer>,
        metrics: &Arc<Metrics>,
    ) -> Self {
        RouterBackend {
            inner: Arc::new(RouterInner {
                pool,
                config,
                block_size,
                metrics: RouterMetrics::new(metrics),
                rng: Mutex::new(rand::rngs::StdRng::from_os_rng()),
                round_robin: AtomicUsize::new(0),
            }),
            tokenizer,
            stopped: AtomicBool::new(false),
        }
    }
}

impl Backend for RouterBackend {
    fn generate(&self, mut request: ServingRequest) -> OutputStream {
        if self.stopped.load(Ordering::Acquire) {
            return futures::stream::once(async { Err(ServingError::Shutdown) }).boxed();
        }
        let arrival = Instant::now();
        // Both workers must draw the same random numbers.
        if request.request.params.seed.is_none() && !request.request.params.is_greedy() {
            request.request.params.seed = Some(rand::random());
        }
        let stop = match StopMatcher::new(
            std::mem::take(&mut request.stop_strings),
            request.include_stop_str_in_output,
        ) {
            Ok(s) => s,
            Err(e) => {
                let e = ServingError::Rejected(e.to_string());
                return futures::stream::once(async move { Err(e) }).boxed();
            }
        };
        let r = &request.request;
        let mut builder = OutputBuilder::new(
            &r.prompt_tokens,
            stop,
            r.stop.min_tokens,
            r.stop.stop_token_ids.clone(),
            request.skip_special_tokens,
            arrival,
        );
        let tokenizer = self.tokenizer.clone();
        let mut tokens = flow::run(self.inner.clone(), request);
        async_stream::stream! {
            while let Some(item) = tokens.next().await {
                let out = match item {
                    Ok(out) => out,
                    Err(e) => {
                        yield Err(e);
                        return;
                    }
                };
                let n = out.samples.len();
                for (i, sample) in out.samples.into_iter().enumerate() {
                    let finished = if i + 1 == n { out.finish_reason } else { None };
                    match builder.on_token(&tokenizer, sample, finished, out.cached_tokens) {
                        Ok(mut update) => {
                            // Time to first token and end to end are what the
                            // client saw here; the split is the workers'.
                            if let (Some(t), Some(w)) = (update.timings.as_mut(), out.timings) {
                                w.apply_to(t);
                            }
                            let done = update.finish_reason.is_some();
                            yield Ok(update);
                            if done {
                                // Dropping `tokens` aborts the worker's request.
                                return;
                            }
                        }
                        Err(e) => {
                            yield Err(ServingError::Engine(e.to_string()));
                            return;
                        }
                    }
                }
            }
        }
        .boxed()
    }

    fn stats(&self) -> EngineStats {
        let mut total = EngineStats {
            prefix_cache: PrefixCacheStats::default(),
            ..Default::default()
        };
        let statuses: Vec<_> = self
            .inner
            .pool
            .workers()
            .iter()
            .filter_map(|w| w.status())
            .collect();
        for s in &statuses {
            total.num_running += s.num_running;
            total.num_waiting += s.num_waiting;
            total.kv_usage += s.kv_usage / statuses.len() as f64;
            total.num_kv_leases += s.num_kv_leases;
            total.num_loading_kv += s.num_loading_kv;
            total.num_kv_pulls_discarded += s.num_kv_pulls_discarded;
        }
        total
    }

    fn shutdown(&self) {
        self.stopped.store(true, Ordering::Release);
    }

    fn is_healthy(&self) -> bool {
        !self.stopped.load(Ordering::Acquire) && !self.inner.pool.healthy(Role::Decode).is_empty()
    }
}
