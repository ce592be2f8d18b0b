//! `tandem serve`: everything on one machine. By default a router (this
//! process) in front of prefill and decode workers started as child
//! processes, joined by UCX over loopback; `--colocated` serves from one
//! engine in this process (or, with `--workers N`, from N `both` workers
//! behind the router). It prints the URL once every worker is healthy,
//! restarts a worker that dies (see [`supervise`](super::supervise)), and
//! on Ctrl-C/SIGTERM drains the router, then stops the workers.

use std::net::{IpAddr, Ipv4Addr};
use std::time::Duration;

use anyhow::{bail, Context};
use tokio::sync::oneshot;

use super::app;
use super::args::{EngineArgs, HttpArgs};
use super::router::{Embedded, RouterArgs, RoutingArgs};
use super::supervise::{Launcher, Policy, RouterLink, Running, Supervisor};
use super::worker::WorkerArgs;
use crate::rag::embedder::EmbedderArgs;
use crate::rag::RagArgs;
use crate::worker::Role;

#[derive(clap::Args, Debug, Clone)]
pub struct ServeArgs {
    /// Prefill and decode in the same engine (no transfer).
    #[arg(long)]
    pub colocated: bool,
    /// With --colocated: how many `both` workers (more than 1 puts the router in front).
    #[arg(long, default_value_t = 1)]
    pub workers: usize,
    #[arg(long, default_value_t = 1)]
    pub prefill_workers: usize,
    #[arg(long, default_value_t = 1)]
    pub decode_workers: usize,
    #[command(flatten)]
    pub http: HttpArgs,
    #[command(flatten)]
    pub engine: EngineArgs,
    #[command(flatten)]
    pub routing: RoutingArgs,
    /// Seconds a prefill worker holds KV nobody pulled.
    #[arg(long, default_value_t = 10.0)]
    pub kv_lease_timeout: f64,
    /// Seconds to wait for the workers to load and become healthy.
    #[arg(long, default_value_t = 300.0)]
    pub ready_timeout: f64,
    #[command(flatten)]
    pub embedder: EmbedderArgs,
    #[command(flatten)]
    pub rag: RagArgs,
}

impl ServeArgs {
    fn check(&self) -> anyhow::Result<()> {
        if self.colocated && self.workers == 0 {
            bail!("--workers must be at least 1");
        }
        if !self.colocated && (self.prefill_workers == 0 || self.decode_workers == 0) {
            bail!("P/D serving needs at least one --prefill-workers and one --decode-workers (or use --colocated)");
        }
        self.worker_args(Role::Both).check()?;
        self.routing.check()
    }

    fn worker_args(&self, role: Role) -> WorkerArgs {
        WorkerArgs {
            role,
            http: self.http.clone(),
            engine: self.engine.clone(),
            internal_token: None,
            kv_lease_timeout: self.kv_lease_timeout,
            ucx_transports: None,
            embedder: self.embedder.clone(),
            rag: self.rag.clone(),
        }
    }

    /// The role of each worker process, in the order they start.
    fn roles(&self) -> Vec<Role> {
        if self.colocated {
            return vec![Role::Both; self.workers];
        }
        let mut r = vec![Role::Prefill; self.prefill_workers];
        r.extend(vec![Role::Decode; self.decode_workers]);
        r
    }

    fn router_args(&self, workers: Vec<(Role, String)>) -> RouterArgs {
        let pick = |r: Role| -> Vec<String> {
            workers
                .iter()
                .filter(|(role, _)| *role == r)
                .map(|(_, u)| u.clone())
                .collect()
        };
        RouterArgs {
            http: self.http.clone(),
            routing: self.routing.clone(),
            prefill: pick(Role::Prefill),
            decode: pick(Role::Decode),
            worker: pick(Role::Both),
            block_size: self.engine.block_size,
            embedder: self.embedder.clone(),
            rag: self.rag.clone(),
        }
    }
}

pub fn run(args: ServeArgs) -> anyhow::Result<()> {
    args.check()?;
    if args.http.check_config {
        println!("tandem serve: configuration OK");
        return Ok(());
    }
    if args.colocated && args.workers == 1 {
        return super::worker::run_on(
            args.worker_args(Role::Both),
            IpAddr::V4(Ipv4Addr::UNSPECIFIED),
        );
    }
    let dir = app::model_dir(&args.http)?;
    let names = app::served_names(&dir, &args.http);
    let token = format!("{:032x}", rand::random::<u128>());
    let launcher = Launcher::new(&dir, &names, &args, token.clone())?;
    app::runtime()?.block_on(async move {
        let workers = start_workers(&launcher, &args.roles()).await?;
        let mut router =
            args.router_args(workers.iter().map(|w| (w.role, w.url.clone())).collect());
        router.routing.internal_token = Some(token);
        let grace = Duration::from_secs_f64(args.http.shutdown_timeout.max(0.0));
        let stop = app::stop_signal();
        let (link_tx, link_rx) = oneshot::channel();
        let mut supervisor = Supervisor::start(
            launcher,
            workers,
            Policy::default(),
            grace,
            link_rx,
            stop.clone(),
        );
        let embedded = Embedded {
            ready_timeout: Duration::from_secs_f64(args.ready_timeout),
            stop,
            attach: Box::new(move |pool, metrics| {
                let link = RouterLink {
                    pool: pool.clone(),
                    metrics: metrics.clone(),
                };
                let _ = link_tx.send(link);
            }),
        };
        // The router drains first; the workers stop after it.
        let outcome = tokio::select! {
            r = super::router::serve(&router, &dir, Some(embedded)) => r,
            e = supervisor.fatal() => Err(e),
        };
        supervisor.stop().await;
        outcome
    })
}

/// Starts one worker per role, in order; the first that fails ends it all
/// (those already started are killed as they drop).
async fn start_workers(launcher: &Launcher, roles: &[Role]) -> anyhow::Result<Vec<Running>> {
    let mut workers = Vec::with_capacity(roles.len());
    for (i, role) in roles.iter().enumerate() {
        let name = format!("{}-{i}", role.name());
        let w = launcher
            .start(&name, *role)
            .await
            .with_context(|| format!("starting worker {name}"))?;
        workers.push(w);
    }
    Ok(workers)
}
