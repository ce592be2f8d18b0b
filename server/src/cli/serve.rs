//! `tandem serve`: everything on one machine. By default a router (this
//! process) in front of prefill and decode workers started as child
//! processes, joined by UCX over loopback; `--colocated` serves from one
//! engine in this process (or, with `--workers N`, from N `both` workers
//! behind the router). It prints the URL once every worker is healthy, and
//! stops the children on Ctrl-C/SIGTERM or as soon as one of them dies.

use std::net::{IpAddr, Ipv4Addr};
use std::process::Stdio;
use std::time::Duration;

use anyhow::{bail, Context};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

use super::app;
use super::args::{EngineArgs, HttpArgs};
use super::router::{RouterArgs, RoutingArgs};
use super::worker::WorkerArgs;
use crate::rag::embedder::EmbedderArgs;
use crate::rag::RagArgs;
use crate::worker::Role;

/// UCX transports between workers of one machine (docs/benchmarks.md, "KV
/// transfer": 5–12 GB/s for registered arenas, against ~1 GB/s over tcp).
const SAME_HOST_TRANSPORTS: &str = "posix,sysv,cma";

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
    let roles: Vec<Role> = if args.colocated {
        vec![Role::Both; args.workers]
    } else {
        let mut r = vec![Role::Prefill; args.prefill_workers];
        r.extend(vec![Role::Decode; args.decode_workers]);
        r
    };
    let token = format!("{:032x}", rand::random::<u128>());
    app::runtime()?.block_on(async move {
        let mut children = Children::default();
        for (i, role) in roles.iter().enumerate() {
            let name = format!("{}-{i}", role.name());
            let url = children
                .spawn(&name, *role, &dir, &names, &args, &token)
                .await
                .with_context(|| format!("starting worker {name}"))?;
            children.urls.push((*role, url));
        }
        let mut router = args.router_args(children.urls.clone());
        router.routing.internal_token = Some(token);
        let ready = Duration::from_secs_f64(args.ready_timeout);
        let outcome = tokio::select! {
            r = super::router::serve(&router, &dir, Some(ready)) => r,
            died = children.first_exit() => Err(died),
        };
        children
            .stop(Duration::from_secs_f64(args.http.shutdown_timeout.max(0.0)))
            .await;
        outcome
    })
}

/// The worker processes of one `tandem serve`.
#[derive(Default)]
struct Children {
    procs: Vec<(String, Child)>,
    urls: Vec<(Role, String)>,
}

impl Children {
    /// Starts one worker on a free loopback port; returns its URL once it
    /// printed it.
    async fn spawn(
        &mut self,
        name: &str,
        role: Role,
        dir: &std::path::Path,
        names: &[String],
        args: &ServeArgs,
        token: &str,
    ) -> anyhow::Result<String> {
        let exe = std::env::current_exe().context("finding the tandem binary")?;
        let mut cmd = Command::new(exe);
        cmd.args([
            "worker",
            "--role",
            role.name(),
            "--host",
            "127.0.0.1",
            "--port",
            "0",
        ])
        .arg("--model")
        .arg(dir)
        .arg("--served-model-name")
        .args(names)
        .args(args.engine.to_args())
        .args(["--kv-lease-timeout", &args.kv_lease_timeout.to_string()])
        .args([
            "--shutdown-timeout",
            &args.http.shutdown_timeout.to_string(),
        ])
        .env("TANDEM_INTERNAL_TOKEN", token)
        .env_remove("TANDEM_API_KEY")
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        // Ctrl-C reaches this process only; it stops the children in order.
        .process_group(0)
        .kill_on_drop(true);
        // SAFETY: prctl is async-signal-safe; it only sets this child's
        // parent-death signal, so workers never outlive a killed `serve`.
        unsafe {
            cmd.pre_exec(|| {
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM);
                Ok(())
            });
        }
        if let Some(m) = args.http.max_model_len {
            cmd.args(["--max-model-len", &m.to_string()]);
        }
        // Every worker is on this host: shared memory (posix/sysv) and
        // cross-memory attach, unless the user chose transports via UCX_TLS.
        if std::env::var_os("UCX_TLS").is_none() {
            cmd.args(["--ucx-transports", SAME_HOST_TRANSPORTS]);
        }
        let mut child = cmd.spawn().context("spawning a worker process")?;
        let stdout = child.stdout.take().expect("stdout is piped");
        let mut lines = BufReader::new(stdout).lines();
        let url = loop {
            match lines.next_line().await? {
                Some(line) => {
                    if let Some(url) = find_url(&line) {
                        break url;
                    }
                }
                None => {
                    let status = child.wait().await?;
                    bail!("worker {name} exited ({status}) before listening; its log is above");
                }
            }
        };
        // Keep draining its stdout so it never blocks on a full pipe.
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
        tracing::info!(worker = name, url, "worker listening");
        self.procs.push((name.to_string(), child));
        Ok(url)
    }

    /// Resolves when any worker exits, with what to tell the user.
    async fn first_exit(&mut self) -> anyhow::Error {
        if self.procs.is_empty() {
            return futures::future::pending().await;
        }
        let waits = self
            .procs
            .iter_mut()
            .map(|(name, child)| Box::pin(async move { (name.clone(), child.wait().await) }));
        let ((name, status), _, _) = futures::future::select_all(waits).await;
        let status = status
            .map(|s| s.to_string())
            .unwrap_or_else(|e| e.to_string());
        anyhow::anyhow!("worker {name} exited unexpectedly ({status}); stopping every worker (its error is in the log above)")
    }

    /// SIGTERM to every worker, then SIGKILL after `grace`.
    async fn stop(&mut self, grace: Duration) {
        for (_, child) in &self.procs {
            if let Some(pid) = child.id() {
                // SAFETY: plain kill(2) on our own child's pid.
                unsafe {
                    libc::kill(pid as i32, libc::SIGTERM);
                }
            }
        }
        for (name, child) in &mut self.procs {
            if tokio::time::timeout(grace, child.wait()).await.is_err() {
                tracing::warn!(worker = name, "worker did not stop in time; killing it");
                let _ = child.kill().await;
            }
        }
    }
}

/// The `http://127.0.0.1:PORT` a worker prints when it listens.
fn find_url(line: &str) -> Option<String> {
    let start = line.find("http://")?;
    let url: String = line[start..]
        .chars()
        .take_while(|c| !c.is_whitespace() && *c != ')')
        .collect();
    Some(url)
}

#[cfg(test)]
mod tests {
    use super::find_url;

    #[test]
    fn finds_the_url_a_worker_prints() {
        let line = "tandem: prefill worker serving \"m\" on http://127.0.0.1:4321 (listening on 127.0.0.1:4321)";
        assert_eq!(find_url(line).as_deref(), Some("http://127.0.0.1:4321"));
        assert_eq!(find_url("nothing here"), None);
    }
}
