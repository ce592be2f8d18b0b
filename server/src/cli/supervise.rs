//! `tandem serve`'s worker processes: each started on a free loopback port,
//! restarted with exponential backoff when it exits (the router follows it
//! to its new port), given up on when it crash-loops (then `serve` exits
//! with that error, as a supervisor would), and stopped in order on
//! shutdown, never restarted once shutdown began.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use metrics::Counter;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};
use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::JoinHandle;

use super::serve::ServeArgs;
use crate::api::metrics::Metrics;
use crate::router::WorkerPool;
use crate::worker::Role;

/// UCX transports between workers of one machine (docs/benchmarks.md, "KV
/// transfer": 5–12 GB/s for registered arenas, against ~1 GB/s over tcp).
const SAME_HOST_TRANSPORTS: &str = "posix,sysv,cma";

/// When to restart a worker that exited, and when to stop trying.
#[derive(Clone, Copy, Debug)]
pub struct Policy {
    /// Delay before the first restart; each further failure doubles it.
    pub first_delay: Duration,
    pub max_delay: Duration,
    /// A worker that ran this long was healthy: its next exit starts the
    /// backoff over.
    pub stable_after: Duration,
    /// This many exits in a row, all within `window`, is a crash loop.
    pub crash_loop_exits: usize,
    pub window: Duration,
}

impl Default for Policy {
    fn default() -> Self {
        Policy {
            first_delay: Duration::from_millis(500),
            max_delay: Duration::from_secs(30),
            stable_after: Duration::from_secs(60),
            crash_loop_exits: 5,
            window: Duration::from_secs(60),
        }
    }
}

/// One worker's recent exits, which decide the next delay.
#[derive(Debug)]
struct Backoff {
    policy: Policy,
    /// Exits since the worker last ran for `stable_after`.
    in_a_row: usize,
    /// When those exits happened, the ones older than `window` dropped.
    recent: Vec<Instant>,
}

impl Backoff {
    fn new(policy: Policy) -> Self {
        Backoff {
            policy,
            in_a_row: 0,
            recent: Vec::new(),
        }
    }

    /// Records an exit at `now` of a process that ran for `ran_for`: the
    /// delay before restarting it, or `None` when it is crash-looping.
    fn on_exit(&mut self, now: Instant, ran_for: Duration) -> Option<Duration> {
        let p = self.policy;
        if ran_for >= p.stable_after {
            self.in_a_row = 0;
            self.recent.clear();
        }
        self.in_a_row += 1;
        self.recent.push(now);
        self.recent
            .retain(|&t| now.saturating_duration_since(t) < p.window);
        if self.recent.len() >= p.crash_loop_exits {
            return None;
        }
        let doublings = (self.in_a_row - 1).min(16) as u32;
        Some(
            p.first_delay
                .saturating_mul(1 << doublings)
                .min(p.max_delay),
        )
    }

    /// Exits in a row within the window.
    fn in_window(&self) -> usize {
        self.recent.len()
    }
}

/// Starts worker processes: everything but the role is the same for all.
pub struct Launcher {
    exe: PathBuf,
    args: Vec<OsString>,
    token: String,
}

/// A worker process that printed the URL it listens on.
pub struct Running {
    pub name: String,
    pub role: Role,
    pub url: String,
    child: Child,
}

impl Launcher {
    pub fn new(
        dir: &Path,
        names: &[String],
        serve: &ServeArgs,
        token: String,
    ) -> anyhow::Result<Self> {
        let exe = std::env::current_exe().context("finding the tandem binary")?;
        let mut args: Vec<OsString> = vec!["--model".into(), dir.into()];
        args.push("--served-model-name".into());
        args.extend(names.iter().map(OsString::from));
        args.extend(serve.engine.to_args().into_iter().map(OsString::from));
        for (flag, value) in [
            ("--kv-lease-timeout", serve.kv_lease_timeout.to_string()),
            (
                "--shutdown-timeout",
                serve.http.shutdown_timeout.to_string(),
            ),
        ] {
            args.extend([flag.into(), value.into()]);
        }
        if let Some(m) = serve.http.max_model_len {
            args.extend(["--max-model-len".into(), m.to_string().into()]);
        }
        // Every worker is on this host: shared memory (posix/sysv) and
        // cross-memory attach, unless the user chose transports via UCX_TLS.
        if std::env::var_os("UCX_TLS").is_none() {
            args.extend(["--ucx-transports".into(), SAME_HOST_TRANSPORTS.into()]);
        }
        Ok(Launcher { exe, args, token })
    }

    /// Starts worker `name` on a free loopback port; returns once it
    /// printed its URL.
    pub async fn start(&self, name: &str, role: Role) -> anyhow::Result<Running> {
        let mut cmd = Command::new(&self.exe);
        cmd.args(["worker", "--role", role.name()])
            .args(["--host", "127.0.0.1", "--port", "0"])
            .args(&self.args)
            .env("TANDEM_INTERNAL_TOKEN", &self.token)
            .env_remove("TANDEM_API_KEY")
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            // Ctrl-C reaches `serve` only; it stops the workers in order.
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
        tracing::info!(worker = name, pid = child.id(), url, "worker listening");
        Ok(Running {
            name: name.to_string(),
            role,
            url,
            child,
        })
    }
}

impl Running {
    /// SIGTERM, then SIGKILL if it has not exited after `grace`.
    async fn terminate(&mut self, grace: Duration) {
        if let Some(pid) = self.child.id() {
            // SAFETY: plain kill(2) on our own child's pid.
            unsafe {
                libc::kill(pid as i32, libc::SIGTERM);
            }
        }
        if tokio::time::timeout(grace, self.child.wait())
            .await
            .is_err()
        {
            tracing::warn!(
                worker = self.name,
                "worker did not stop in time; killing it"
            );
            let _ = self.child.kill().await;
        }
    }
}

/// What the supervisor needs from the router: where to point it when a
/// worker moves, and where to count restarts.
pub struct RouterLink {
    pub pool: Arc<WorkerPool>,
    pub metrics: Arc<Metrics>,
}

/// The running supervisor, owned by `serve`.
pub struct Supervisor {
    grace: Duration,
    terminate: watch::Sender<bool>,
    fatal: mpsc::UnboundedReceiver<anyhow::Error>,
    task: JoinHandle<()>,
}

/// Shared by every worker's loop.
struct Shared {
    launcher: Launcher,
    policy: Policy,
    grace: Duration,
    link: Option<RouterLink>,
    restarts: Vec<(Role, Counter)>,
    fatal: mpsc::UnboundedSender<anyhow::Error>,
}

impl Supervisor {
    /// Watches `workers` until [`stop`](Self::stop), which gives each
    /// `grace` to exit after SIGTERM. Restarts wait for `router` (the pool
    /// exists a moment after the workers); after `shutdown` flips nothing
    /// is restarted.
    pub fn start(
        launcher: Launcher,
        workers: Vec<Running>,
        policy: Policy,
        grace: Duration,
        router: oneshot::Receiver<RouterLink>,
        shutdown: watch::Receiver<bool>,
    ) -> Self {
        let (terminate, terminate_rx) = watch::channel(false);
        let (fatal_tx, fatal) = mpsc::unbounded_channel();
        let task = tokio::spawn(async move {
            let mut stopping = terminate_rx.clone();
            let link = tokio::select! {
                link = router => link.ok(),
                _ = terminated(&mut stopping) => None,
            };
            let restarts = match &link {
                Some(l) => restart_counters(&l.metrics, &workers),
                None => Vec::new(),
            };
            let shared = Arc::new(Shared {
                launcher,
                policy,
                grace,
                link,
                restarts,
                fatal: fatal_tx,
            });
            let loops = workers
                .into_iter()
                .map(|w| keep_alive(shared.clone(), w, shutdown.clone(), terminate_rx.clone()));
            futures::future::join_all(loops).await;
        });
        Supervisor {
            grace,
            terminate,
            fatal,
            task,
        }
    }

    /// Resolves when a worker crash-loops, with what to tell the user.
    pub async fn fatal(&mut self) -> anyhow::Error {
        match self.fatal.recv().await {
            Some(e) => e,
            None => futures::future::pending().await,
        }
    }

    /// SIGTERM to every worker (SIGKILL to those still running after the
    /// grace period); returns once all exited.
    pub async fn stop(self) {
        let _ = self.terminate.send(true);
        let mut task = self.task;
        let margin = Duration::from_secs(2);
        if tokio::time::timeout(self.grace + margin, &mut task)
            .await
            .is_err()
        {
            // Dropping the loops kills what they still hold (kill_on_drop).
            task.abort();
            let _ = task.await;
        }
    }
}

/// `tandem_worker_restarts_total{role}` for each role served, at 0.
fn restart_counters(metrics: &Metrics, workers: &[Running]) -> Vec<(Role, Counter)> {
    let mut roles: Vec<Role> = workers.iter().map(|w| w.role).collect();
    roles.dedup();
    roles
        .into_iter()
        .map(|role| {
            let c = metrics.counter(
                "tandem_worker_restarts_total",
                &[("role", role.name())],
                "Worker processes `tandem serve` started again after one exited, by role.",
            );
            c.increment(0);
            (role, c)
        })
        .collect()
}

impl Shared {
    fn count_restart(&self, role: Role) {
        for (_, c) in self.restarts.iter().filter(|(r, _)| *r == role) {
            c.increment(1);
        }
    }
}

/// Resolves once `rx` is true; never if its sender is gone without that.
async fn flipped(rx: &mut watch::Receiver<bool>) {
    if rx.wait_for(|&v| v).await.is_err() {
        futures::future::pending::<()>().await;
    }
}

/// Resolves once `rx` is true or its sender is gone (the [`Supervisor`]
/// was dropped): either way the workers must stop.
async fn terminated(rx: &mut watch::Receiver<bool>) {
    let _ = rx.wait_for(|&v| v).await;
}

fn describe(status: std::io::Result<ExitStatus>) -> String {
    match status {
        Ok(s) => s.to_string(),
        Err(e) => format!("wait failed: {e}"),
    }
}

/// Runs one worker until `terminate`: whenever it exits, starts it again
/// after the backoff, and points the router at its new URL.
async fn keep_alive(
    shared: Arc<Shared>,
    mut worker: Running,
    mut shutdown: watch::Receiver<bool>,
    mut terminate: watch::Receiver<bool>,
) {
    let mut backoff = Backoff::new(shared.policy);
    let mut restarts = 0u64;
    loop {
        let up_since = Instant::now();
        let status = tokio::select! {
            s = worker.child.wait() => s,
            _ = terminated(&mut terminate) => {
                worker.terminate(shared.grace).await;
                return;
            }
        };
        let mut why = describe(status);
        if let Some(link) = &shared.link {
            link.pool.mark_down(&worker.url);
        }
        if *shutdown.borrow() || *terminate.borrow() {
            tracing::info!(
                worker = worker.name,
                status = why,
                "worker exited during shutdown"
            );
            return;
        }
        let mut ran_for = up_since.elapsed();
        let next = loop {
            let Some(delay) = backoff.on_exit(Instant::now(), ran_for) else {
                let e = anyhow::anyhow!(
                    "worker {} exited {} times within {:?} (last: {why}); giving up and stopping every worker (its error is in the log above)",
                    worker.name,
                    backoff.in_window(),
                    shared.policy.window,
                );
                let _ = shared.fatal.send(e);
                return;
            };
            restarts += 1;
            tracing::warn!(
                worker = worker.name,
                status = why,
                restarts,
                next_delay = ?delay,
                "worker exited; restarting it"
            );
            let start = async {
                tokio::time::sleep(delay).await;
                shared.count_restart(worker.role);
                shared.launcher.start(&worker.name, worker.role).await
            };
            let started = tokio::select! {
                r = start => r,
                _ = flipped(&mut shutdown) => {
                    tracing::info!(worker = worker.name, "shutting down: not restarting the worker");
                    return;
                }
                _ = terminated(&mut terminate) => return,
            };
            match started {
                Ok(w) => break w,
                Err(e) => {
                    why = format!("{e:#}");
                    ran_for = Duration::ZERO;
                }
            }
        };
        if let Some(link) = &shared.link {
            link.pool.replace(&worker.url, &next.url).await;
        }
        tracing::info!(
            worker = worker.name,
            old_url = worker.url,
            url = next.url,
            "worker restarted; the router follows it"
        );
        worker = next;
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
    use super::*;

    #[test]
    fn finds_the_url_a_worker_prints() {
        let line = "tandem: prefill worker serving \"m\" on http://127.0.0.1:4321 (listening on 127.0.0.1:4321)";
        assert_eq!(find_url(line).as_deref(), Some("http://127.0.0.1:4321"));
        assert_eq!(find_url("nothing here"), None);
    }

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn delays_double_up_to_the_cap() {
        let policy = Policy {
            crash_loop_exits: 100,
            window: Duration::from_secs(3600),
            ..Policy::default()
        };
        let mut b = Backoff::new(policy);
        let t0 = Instant::now();
        let delays: Vec<Duration> = (0..9)
            .map(|i| b.on_exit(t0 + ms(i * 10), ms(1)).unwrap())
            .collect();
        let secs: Vec<f64> = delays.iter().map(Duration::as_secs_f64).collect();
        assert_eq!(secs, [0.5, 1.0, 2.0, 4.0, 8.0, 16.0, 30.0, 30.0, 30.0]);
    }

    #[test]
    fn a_stable_run_starts_the_backoff_over() {
        let mut b = Backoff::new(Policy::default());
        let t0 = Instant::now();
        assert_eq!(b.on_exit(t0, ms(5)), Some(ms(500)));
        assert_eq!(b.on_exit(t0 + ms(600), ms(5)), Some(ms(1000)));
        let later = t0 + Duration::from_secs(70);
        assert_eq!(b.on_exit(later, Duration::from_secs(61)), Some(ms(500)));
    }

    #[test]
    fn five_quick_exits_in_a_row_are_a_crash_loop() {
        let mut b = Backoff::new(Policy::default());
        let t0 = Instant::now();
        for i in 0..4 {
            assert!(b.on_exit(t0 + ms(i * 1000), ms(100)).is_some());
        }
        assert_eq!(b.on_exit(t0 + ms(5000), ms(100)), None);
    }

    #[test]
    fn exits_spread_over_more_than_the_window_are_not_a_crash_loop() {
        let mut b = Backoff::new(Policy::default());
        let t0 = Instant::now();
        let mut last = Duration::ZERO;
        for i in 0..10 {
            // One exit every 20 s, each run short: at most 3 in any minute,
            // and the delay still grows, up to its cap.
            let at = t0 + Duration::from_secs(20 * i);
            last = b.on_exit(at, ms(100)).unwrap_or_else(|| panic!("exit {i}"));
        }
        assert_eq!(last, Duration::from_secs(30));
    }
}
