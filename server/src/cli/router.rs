//! `tandem router`: the OpenAI API in front of prefill, decode and
//! colocated workers. Loads only the model's tokenizer, config and chat
//! template; the workers hold the weights.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use anyhow::bail;

use super::app;
use super::args::HttpArgs;
use crate::api::metrics::Metrics;
use crate::api::{self, AppState};
use crate::rag::embedder::EmbedderArgs;
use crate::rag::RagArgs;
use crate::router::scoring::{Routing, Weights};
use crate::router::{RouterBackend, RouterConfig, Seed, WorkerClient, WorkerPool};
use crate::worker::Role;

#[derive(clap::Args, Debug, Clone)]
pub struct RouterArgs {
    #[command(flatten)]
    pub http: HttpArgs,
    #[command(flatten)]
    pub routing: RoutingArgs,
    /// Prefill worker URLs (http://host:port); a host name resolving to
    /// several addresses (a headless Service) means all of them.
    #[arg(long, num_args = 1..)]
    pub prefill: Vec<String>,
    /// Decode worker URLs, as --prefill.
    #[arg(long, num_args = 1..)]
    pub decode: Vec<String>,
    /// Colocated (`--role both`) worker URLs, as --prefill.
    #[arg(long, num_args = 1..)]
    pub worker: Vec<String>,
    /// Tokens per KV block of the workers (for prefix hashing).
    #[arg(long, default_value_t = 16)]
    pub block_size: usize,
    #[command(flatten)]
    pub embedder: EmbedderArgs,
    #[command(flatten)]
    pub rag: RagArgs,
}

/// How the router picks workers.
#[derive(clap::Args, Debug, Clone)]
pub struct RoutingArgs {
    #[arg(long, value_enum, default_value = "kv-aware")]
    pub routing: Routing,
    /// Weight of prefix overlap (fraction of prompt blocks cached).
    #[arg(long, default_value_t = 2.0)]
    pub prefix_weight: f64,
    /// Weight of queue depth (running + waiting).
    #[arg(long, default_value_t = 1.0)]
    pub queue_weight: f64,
    /// Weight of free KV cache.
    #[arg(long, default_value_t = 1.0)]
    pub kv_usage_weight: f64,
    /// Prefill on a prefill worker only when at least this many prompt
    /// tokens are not cached on the decode worker; shorter prompts are
    /// computed by the decode worker itself (0: always disaggregate).
    #[arg(long, default_value_t = 256)]
    pub pd_threshold: usize,
    /// Prefill prompts longer than this in stages of this many tokens
    /// (rounded down to whole KV blocks): the decode worker pulls each
    /// finished prefix while the prefill worker computes the next, so
    /// little KV is left to move when the prefill ends (0: one piece).
    #[arg(long, default_value_t = 2048)]
    pub pd_stage_tokens: usize,
    /// Shared secret sent to workers on internal calls.
    #[arg(long, env = "TANDEM_INTERNAL_TOKEN", hide_env_values = true)]
    pub internal_token: Option<String>,
    /// Seconds between DNS re-resolutions of worker addresses.
    #[arg(long, default_value_t = 5.0)]
    pub resolve_interval: f64,
}

impl RoutingArgs {
    pub fn config(&self) -> RouterConfig {
        RouterConfig {
            routing: self.routing,
            weights: Weights {
                prefix: self.prefix_weight,
                queue: self.queue_weight,
                kv_usage: self.kv_usage_weight,
            },
            pd_threshold: self.pd_threshold,
            pd_stage_tokens: self.pd_stage_tokens,
        }
    }

    /// The routing flags' own checks (no worker list needed).
    pub fn check(&self) -> anyhow::Result<()> {
        for (name, w) in [
            ("--prefix-weight", self.prefix_weight),
            ("--queue-weight", self.queue_weight),
            ("--kv-usage-weight", self.kv_usage_weight),
        ] {
            if !w.is_finite() || w < 0.0 {
                bail!("{name} must be a finite number ≥ 0");
            }
        }
        if self.resolve_interval.is_nan() || self.resolve_interval <= 0.0 {
            bail!("--resolve-interval must be positive");
        }
        Ok(())
    }
}

impl RouterArgs {
    pub fn check(&self) -> anyhow::Result<()> {
        if self.decode.is_empty() && self.worker.is_empty() {
            bail!("the router needs workers that decode: give --decode URL… or --worker URL…");
        }
        if !self.prefill.is_empty() && self.decode.is_empty() {
            bail!("--prefill workers need --decode workers to hand their KV to");
        }
        for url in self.prefill.iter().chain(&self.decode).chain(&self.worker) {
            if !url.starts_with("http://") {
                bail!("worker URL {url:?} must look like http://host:port");
            }
        }
        if self.block_size == 0 {
            bail!("--block-size must be positive");
        }
        self.routing.check()
    }

    fn seeds(&self) -> Vec<Seed> {
        let mut seeds = Vec::new();
        for (urls, role) in [
            (&self.prefill, Role::Prefill),
            (&self.decode, Role::Decode),
            (&self.worker, Role::Both),
        ] {
            seeds.extend(urls.iter().map(|u| Seed {
                url: u.trim_end_matches('/').to_string(),
                role,
            }));
        }
        seeds
    }
}

pub fn run(args: RouterArgs) -> anyhow::Result<()> {
    args.check()?;
    if args.http.check_config {
        println!("tandem router: configuration OK");
        return Ok(());
    }
    let dir = app::model_dir(&args.http)?;
    app::runtime()?.block_on(serve(&args, &dir, None))
}

/// Called once with the router's worker pool and metrics registry.
pub type Attach = Box<dyn FnOnce(&Arc<WorkerPool>, &Arc<Metrics>) + Send>;

/// What `tandem serve` adds to the router it runs in-process.
pub struct Embedded {
    /// Wait this long for a healthy worker of every role before listening.
    pub ready_timeout: Duration,
    /// The stop signal, shared with the worker supervisor.
    pub stop: tokio::sync::watch::Receiver<bool>,
    /// Handed the worker pool and the metrics registry as soon as they
    /// exist, so the supervisor can point the pool at a restarted worker
    /// and count restarts.
    pub attach: Attach,
}

/// Runs the router until SIGTERM/SIGINT (or `embedded.stop`). Embedded in
/// `tandem serve`, it first waits for a healthy worker of every role.
pub async fn serve(
    args: &RouterArgs,
    dir: &std::path::Path,
    embedded: Option<Embedded>,
) -> anyhow::Result<()> {
    let meta = app::load_meta(dir)?;
    let info = app::model_info(dir, &meta, &args.http)?;
    let metrics = Arc::new(Metrics::new(info.name()));
    let token = args
        .routing
        .internal_token
        .clone()
        .filter(|t| !t.is_empty());
    let pool = WorkerPool::new(args.seeds(), WorkerClient::new(token));
    pool.start(Duration::from_secs_f64(args.routing.resolve_interval));
    let stop = match embedded {
        Some(e) => {
            (e.attach)(&pool, &metrics);
            let mut stopped = e.stop.clone();
            tokio::select! {
                ready = pool.wait_ready(e.ready_timeout) => {
                    if !ready {
                        bail!("the workers did not become healthy within {:?}", e.ready_timeout);
                    }
                }
                // Stopped before it listened: nothing to drain.
                _ = stopped.wait_for(|&s| s) => return Ok(()),
            }
            e.stop
        }
        None => app::stop_signal(),
    };
    let backend = RouterBackend::new(
        pool,
        args.routing.config(),
        args.block_size,
        meta.tokenizer.clone(),
        &metrics,
    );
    let mut state = AppState::with_metrics(
        info,
        metrics,
        Arc::new(backend),
        args.http.max_waiting,
        app::api_key(&args.http)?,
    );
    state.max_body_bytes = args.http.max_request_body;
    state.log_prompts = args.http.log_prompts;
    let state = app::with_embedder(state, &args.embedder)?;
    let state = app::with_rag(state, &args.rag)?;
    let host = args.http.host.unwrap_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED));
    app::listen(
        api::router(state.clone()),
        state,
        SocketAddr::new(host, args.http.port),
        Duration::from_secs_f64(args.http.shutdown_timeout.max(0.0)),
        "router",
        stop,
    )
    .await
}
