//! `tandem worker --role prefill|decode|both`: one engine process. Every
//! role serves the OpenAI API, `/health`, `/metrics` and the internal API
//! the router drives; prefill and decode workers also run a UCX transfer
//! agent, and their KV arena lives in memory that agent allocated.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context};
use tandem_engine::kv_handoff::KvLoader;
use tandem_engine::serving::EngineHandle;
use tandem_engine::{parse_dtype, LoadedModel};

use super::app;
use super::args::{EngineArgs, HttpArgs};
use crate::api::{self, AppState};
use crate::rag::embedder::EmbedderArgs;
use crate::rag::RagArgs;
use crate::worker::{
    self, KvMetrics, Leases, NotificationListener, RequestMetrics, Role, TransportLoader,
    WorkerState,
};

#[derive(clap::Args, Debug, Clone)]
pub struct WorkerArgs {
    #[arg(long, value_enum)]
    pub role: Role,
    #[command(flatten)]
    pub http: HttpArgs,
    #[command(flatten)]
    pub engine: EngineArgs,
    /// Shared secret the router sends on internal calls.
    #[arg(long, env = "TANDEM_INTERNAL_TOKEN", hide_env_values = true)]
    pub internal_token: Option<String>,
    /// Seconds a prefill worker holds a prompt's KV for a decode worker
    /// that has not pulled it.
    #[arg(long, default_value_t = 10.0)]
    pub kv_lease_timeout: f64,
    /// UCX transports for KV pulls (UCX_TLS), e.g. `posix,sysv,cma` on one
    /// host or `rc,tcp` across nodes; default: UCX's own choice.
    #[arg(long)]
    pub ucx_transports: Option<String>,
    /// The embedder and RAG module of a `both` worker that serves clients
    /// directly (prefill and decode workers never load them).
    #[command(flatten)]
    pub embedder: EmbedderArgs,
    #[command(flatten)]
    pub rag: RagArgs,
}

impl WorkerArgs {
    pub fn check(&self) -> anyhow::Result<()> {
        parse_dtype(&self.engine.dtype)?;
        if self.kv_lease_timeout.is_nan() || self.kv_lease_timeout <= 0.0 {
            bail!("--kv-lease-timeout must be a positive number of seconds");
        }
        if self.engine.block_size == 0 || self.engine.max_num_seqs == 0 {
            bail!("--block-size and --max-num-seqs must be at least 1");
        }
        Ok(())
    }
}

pub fn run(args: WorkerArgs) -> anyhow::Result<()> {
    run_on(args, IpAddr::V4(Ipv4Addr::LOCALHOST))
}

/// As `run`, binding `default_host` when `--host` is not given.
pub fn run_on(args: WorkerArgs, default_host: IpAddr) -> anyhow::Result<()> {
    args.check()?;
    if args.http.check_config {
        println!("tandem worker: configuration OK");
        return Ok(());
    }
    let dir = app::model_dir(&args.http)?;
    let model = LoadedModel::load(&dir, parse_dtype(&args.engine.dtype)?)
        .with_context(|| format!("loading {}", dir.display()))?;
    let meta = model.meta();
    let info = app::model_info(&dir, &meta, &args.http)?;
    let model_id = info.name().to_string();
    let opts = args.engine.options();
    // Prefill and decode workers: the agent first, then the engine core
    // over an arena the agent allocated. The arena holds a reference to the
    // agent, so the agent (which frees that memory when dropped) outlives
    // the core wherever the engine thread drops it; `agent` below is just
    // one more reference.
    let (mut core, agent) = match args.role {
        Role::Both => (model.build_core(&opts)?, None),
        role => {
            let name = format!("{}-{}", role.name(), std::process::id());
            let agent = worker::start_agent(&name, args.ucx_transports.clone())?;
            let core = worker::build_core_over_agent(&agent, &model, &opts, &model_id)?;
            (core, Some(agent))
        }
    };
    // The API's grammar checks and the engine share one compiled cache.
    core.set_guidance(info.guidance.clone());
    let arena_info = core.runner().arena_info();
    let block_bytes = arena_info.block_bytes;
    tracing::info!(
        role = args.role.name(),
        device = %arena_info.device,
        memory = %arena_info.memory,
        bytes = arena_info.bytes,
        num_blocks = arena_info.num_blocks,
        "KV arena"
    );
    let metrics = Arc::new(crate::api::metrics::Metrics::new(&model_id));
    metrics.describe_kv_arena(&arena_info, args.engine.block_size);
    let kv_metrics = Arc::new(KvMetrics::new(&metrics));
    let loader: Option<Arc<dyn KvLoader>> = match (&agent, args.role) {
        (Some(a), Role::Decode) => Some(Arc::new(TransportLoader::new(
            a.clone(),
            kv_metrics.clone(),
            block_bytes,
        ))),
        _ => None,
    };
    let engine = EngineHandle::spawn_with_loader(core, model.tokenizer.clone(), loader);
    drop(model);
    let leases = Leases::new(
        engine.clone(),
        Duration::from_secs_f64(args.kv_lease_timeout),
        kv_metrics,
    );
    let _listener = match (&agent, args.role) {
        (Some(a), Role::Prefill) => Some(NotificationListener::start(a, leases.clone())),
        _ => None,
    };
    let rt = app::runtime()?;
    let stop = rt.block_on(async { app::stop_signal() });
    let ws = WorkerState {
        stopping: stop.clone(),
        role: args.role,
        engine: engine.clone(),
        block_size: args.engine.block_size,
        arena: arena_info,
        agent_metadata: agent.as_ref().map(|a| Arc::from(a.metadata())),
        leases,
        requests: Arc::new(RequestMetrics::new(&metrics)),
        token: args
            .internal_token
            .clone()
            .filter(|t| !t.is_empty())
            .map(Arc::from),
    };
    let mut state = AppState::with_metrics(
        info,
        metrics,
        Arc::new(engine.clone()),
        args.http.max_waiting,
        app::api_key(&args.http)?,
    );
    state.max_body_bytes = args.http.max_request_body;
    state.log_prompts = args.http.log_prompts;
    let state = match args.role {
        Role::Both => {
            let state = app::with_embedder(state, &args.embedder)?;
            app::with_rag(state, &args.rag)?
        }
        Role::Prefill | Role::Decode => state,
    };
    let host = args.http.host.unwrap_or(default_host);
    // The internal API hands out KV blocks and runs requests unmetered: on
    // an address other machines reach, only behind the shared token.
    let router = if ws.token.is_some() || host.is_loopback() {
        api::router(state.clone()).merge(worker::routes(ws))
    } else {
        tracing::warn!(
            %host,
            "no --internal-token (TANDEM_INTERNAL_TOKEN): the internal worker API is not served \
             on this address, so no router can use this worker; set a token shared with the \
             router, or bind 127.0.0.1"
        );
        api::router(state.clone())
    };
    let what = format!("{} worker", args.role.name());
    let result = rt.block_on(app::listen(
        router,
        state,
        SocketAddr::new(host, args.http.port),
        Duration::from_secs_f64(args.http.shutdown_timeout.max(0.0)),
        &what,
        stop,
    ));
    // Stop the engine thread's users first, then the listener (it holds
    // the agent's inbox), then our reference to the agent. The agent itself
    // goes only when the last reference does: the engine core's arena holds
    // one, so its memory is never freed under the engine.
    drop(rt);
    drop(_listener);
    drop(agent);
    result
}
