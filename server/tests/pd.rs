//! Prefill/decode disaggregation end to end, with real processes on
//! 127.0.0.1: `tandem worker --role prefill|decode` behind `tandem router`,
//! compared token for token with a colocated server and `tandem generate`;
//! prefix reuse on the decode side, KV-aware choice between two prefill
//! workers, a prefill worker killed mid-request, and `tandem serve` restarting
//! a dead worker (and giving up on one that crash-loops).

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

const MODEL: &str = "tiny";

/// A tandem process that printed its URL; killed when dropped.
struct Proc {
    child: Child,
    url: String,
}

impl Proc {
    fn start(args: &[&str]) -> Proc {
        let mut child = Command::new(env!("CARGO_BIN_EXE_tandem"))
            .args(args)
            .env("RUST_LOG", "warn")
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start tandem");
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if let Some(i) = line.find("http://127.0.0.1:") {
                    let url: String = line[i..]
                        .chars()
                        .take_while(|c| !c.is_whitespace())
                        .collect();
                    let _ = tx.send(url);
                }
            }
        });
        let url = rx
            .recv_timeout(Duration::from_secs(120))
            .unwrap_or_else(|_| panic!("tandem {args:?} did not print its URL"));
        Proc { child, url }
    }

    fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.kill();
    }
}

fn demo_model(dir: &Path) -> String {
    let out = dir.join(MODEL);
    let status = Command::new(env!("CARGO_BIN_EXE_tandem"))
        .args([
            "demo-model",
            "--size",
            "tiny",
            "--out",
            out.to_str().unwrap(),
        ])
        .stdout(Stdio::null())
        .status()
        .unwrap();
    assert!(status.success());
    out.to_str().unwrap().to_string()
}

fn worker(model: &str, role: &str) -> Proc {
    Proc::start(&[
        "worker",
        "--role",
        role,
        "--model",
        model,
        "--port",
        "0",
        "--served-model-name",
        MODEL,
        "--kv-cache-memory",
        "128MiB",
        "--internal-token",
        "t0k",
    ])
}

fn router(model: &str, workers: &[(&str, &Proc)], extra: &[&str]) -> Proc {
    let mut args = vec![
        "router",
        "--model",
        model,
        "--host",
        "127.0.0.1",
        "--port",
        "0",
        "--served-model-name",
        MODEL,
        "--pd-threshold",
        "0",
        "--internal-token",
        "t0k",
    ];
    for (flag, p) in workers {
        args.push(flag);
        args.push(&p.url);
    }
    args.extend_from_slice(extra);
    Proc::start(&args)
}

/// Deterministic pseudo-random token ids, away from the special tokens.
fn tokens(seed: u64, n: usize) -> Vec<u32> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..n)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            10 + (x % 2000) as u32
        })
        .collect()
}

async fn complete(http: &reqwest::Client, base: &str, prompt: &[u32], max_tokens: usize) -> Value {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let resp = http
            .post(format!("{base}/v1/completions"))
            .json(&json!({
                "model": MODEL, "prompt": prompt, "max_tokens": max_tokens,
                "temperature": 0, "ignore_eos": true,
            }))
            .send()
            .await
            .unwrap();
        let status = resp.status();
        let body: Value = resp.json().await.unwrap();
        // The router answers 503 until it has seen healthy workers.
        if status == 503 && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(100)).await;
            continue;
        }
        assert_eq!(status, 200, "{body}");
        return body;
    }
}

fn text(v: &Value) -> String {
    v["choices"][0]["text"].as_str().unwrap().to_string()
}

async fn metric(http: &reqwest::Client, base: &str, name: &str) -> f64 {
    metric_with(http, base, name, &[]).await
}

/// Sum of `name`'s samples whose line contains every one of `labels`.
async fn metric_with(http: &reqwest::Client, base: &str, name: &str, labels: &[&str]) -> f64 {
    let body = http
        .get(format!("{base}/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    body.lines()
        .filter(|l| l.starts_with(name) && l[name.len()..].starts_with(['{', ' ']))
        .filter(|l| labels.iter().all(|want| l.contains(want)))
        .map(|l| l.rsplit(' ').next().unwrap().parse::<f64>().unwrap())
        .sum()
}

/// The 64 prompts: every length class the KV handoff can get wrong.
fn prompts() -> Vec<Vec<u32>> {
    let mut lens = vec![
        1, 2, 15, 16, 17, 31, 32, 33, 47, 48, 49, 63, 64, 65, 100, 128, 129, 2050, 2100,
    ];
    let mut i = 0;
    while lens.len() < 64 {
        lens.push(3 + (i * 37) % 300);
        i += 1;
    }
    let shared = tokens(999, 40);
    lens.iter()
        .enumerate()
        .map(|(i, &n)| {
            if i % 5 == 4 && n > 40 {
                // Some share a prefix, so the prefix caches take part.
                let mut p = shared.clone();
                p.extend(tokens(i as u64, n - 40));
                p
            } else {
                tokens(i as u64, n)
            }
        })
        .collect()
}

fn generate_offline(model: &str, prompts: &[Vec<u32>], dir: &Path) -> Vec<String> {
    let file = dir.join("ids.jsonl");
    let lines: Vec<String> = prompts
        .iter()
        .map(|p| serde_json::to_string(p).unwrap())
        .collect();
    std::fs::write(&file, lines.join("\n")).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_tandem"))
        .args([
            "generate",
            "--model",
            model,
            "--json",
            "--max-tokens",
            "6",
            "--ignore-eos",
        ])
        .arg("--prompt-ids-file")
        .arg(&file)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| {
            serde_json::from_str::<Value>(l).unwrap()["text"]
                .as_str()
                .unwrap()
                .to_string()
        })
        .collect()
}

async fn all_texts(http: &reqwest::Client, base: &str, prompts: &[Vec<u32>]) -> Vec<String> {
    let mut out = Vec::new();
    for chunk in prompts.chunks(8) {
        let futs = chunk.iter().map(|p| complete(http, base, p, 6));
        out.extend(futures::future::join_all(futs).await.iter().map(text));
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pd_gives_the_same_tokens_as_colocated_and_generate() {
    let dir = tempfile::tempdir().unwrap();
    let model = demo_model(dir.path());
    let prompts = prompts();
    let offline = generate_offline(&model, &prompts, dir.path());

    let prefill = worker(&model, "prefill");
    let decode = worker(&model, "decode");
    let pd = router(
        &model,
        &[("--prefill", &prefill), ("--decode", &decode)],
        &[],
    );
    let colocated = worker(&model, "both");
    let http = reqwest::Client::new();

    let through_pd = all_texts(&http, &pd.url, &prompts).await;
    let through_colocated = all_texts(&http, &colocated.url, &prompts).await;
    for (i, p) in prompts.iter().enumerate() {
        assert_eq!(
            through_pd[i],
            offline[i],
            "prompt {i} ({} tokens): P/D vs generate",
            p.len()
        );
        assert_eq!(
            through_colocated[i],
            offline[i],
            "prompt {i} ({} tokens): colocated vs generate",
            p.len()
        );
    }
    let pulled = metric(&http, &decode.url, "tandem_kv_blocks_pulled_total").await;
    assert!(pulled > 0.0, "P/D requests must pull KV blocks");
    assert_eq!(
        metric(&http, &decode.url, "tandem_kv_pull_failures_total").await,
        0.0
    );
}

async fn internal_status(http: &reqwest::Client, base: &str) -> Value {
    http.get(format!("{base}/internal/status"))
        .header("x-tandem-internal-token", "t0k")
        .send()
        .await
        .unwrap()
        .error_for_status()
        .unwrap()
        .json()
        .await
        .unwrap()
}

/// CPU prefill and decode workers keep their KV arena in memory the UCX
/// agent allocated (same-host peers read it with one memcpy); a colocated
/// worker, which transfers nothing, keeps it in its own memory.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pd_workers_report_an_arena_the_transfer_agent_allocated() {
    let dir = tempfile::tempdir().unwrap();
    let model = demo_model(dir.path());
    let http = reqwest::Client::new();
    for (role, memory) in [
        ("prefill", "transfer-agent (UCX-allocated)"),
        ("decode", "transfer-agent (UCX-allocated)"),
        ("both", "process"),
    ] {
        let w = worker(&model, role);
        let status = internal_status(&http, &w.url).await;
        let arena = &status["kv_arena"];
        assert_eq!(status["role"], role);
        assert_eq!(arena["memory"], memory, "{role}: {status}");
        assert_eq!(arena["device"], "cpu", "{role}: {status}");
        let (blocks, block_bytes) = (
            arena["num_blocks"].as_u64().unwrap(),
            arena["block_bytes"].as_u64().unwrap(),
        );
        assert_eq!(arena["bytes"].as_u64().unwrap(), blocks * block_bytes);
        // --kv-cache-memory 128MiB decides the size, whoever allocates.
        assert_eq!(blocks, (128 << 20) / block_bytes, "{role}: {status}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_shared_prefix_pulls_fewer_blocks_and_lands_where_it_is_cached() {
    let dir = tempfile::tempdir().unwrap();
    let model = demo_model(dir.path());
    let p1 = worker(&model, "prefill");
    let p2 = worker(&model, "prefill");
    let decode = worker(&model, "decode");
    let r = router(
        &model,
        &[
            ("--prefill", &p1),
            ("--prefill", &p2),
            ("--decode", &decode),
        ],
        &[],
    );
    let http = reqwest::Client::new();
    let prefix = tokens(7, 160); // 10 full blocks
    let ask = |suffix_seed: u64| {
        let mut p = prefix.clone();
        p.extend(tokens(suffix_seed, 20));
        p
    };
    let pulled = || metric(&http, &decode.url, "tandem_kv_blocks_pulled_total");
    let before = pulled().await;
    complete(&http, &r.url, &ask(1), 4).await;
    let first = pulled().await - before;
    let failures = metric(&http, &decode.url, "tandem_kv_pull_failures_total").await;
    assert_eq!(
        (first, failures),
        (12.0, 0.0),
        "180 tokens = 12 blocks pulled, none cached yet (pulled, failed pulls)"
    );
    // Let the KV events reach the router.
    tokio::time::sleep(Duration::from_millis(700)).await;
    let chosen = |url: &str| {
        let worker = format!("worker=\"{url}\"");
        let (http, base) = (http.clone(), r.url.clone());
        async move {
            let labels = ["role=\"prefill\"", worker.as_str()];
            metric_with(&http, &base, "tandem_router_decisions_total", &labels).await
        }
    };
    let (a0, b0) = (chosen(&p1.url).await, chosen(&p2.url).await);
    let holder_is_a = a0 > b0;
    let mut cached = Vec::new();
    for s in 2..7 {
        let before = pulled().await;
        let v = complete(&http, &r.url, &ask(s), 4).await;
        let got = pulled().await - before;
        assert!(
            got < first,
            "request {s} pulled {got} blocks, the first {first}"
        );
        assert_eq!(
            got, 2.0,
            "only the 20-token suffix's blocks are new to the decode worker"
        );
        cached.push(
            v["usage"]["prompt_tokens_details"]["cached_tokens"]
                .as_u64()
                .unwrap_or(0),
        );
    }
    let (a1, b1) = (chosen(&p1.url).await, chosen(&p2.url).await);
    if holder_is_a {
        assert_eq!(
            (a1 - a0, b1 - b0),
            (5.0, 0.0),
            "repeats go to the prefill worker holding the prefix"
        );
    } else {
        assert_eq!(
            (a1 - a0, b1 - b0),
            (0.0, 5.0),
            "repeats go to the prefill worker holding the prefix"
        );
    }
    // The overlap the router routed on is what the worker reports cached.
    assert!(cached.iter().all(|&c| c == 160), "cached_tokens {cached:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_survives_its_prefill_worker_dying() {
    let dir = tempfile::tempdir().unwrap();
    let model = demo_model(dir.path());
    let long = tokens(42, 2000);
    let expected = generate_offline(&model, std::slice::from_ref(&long), dir.path());
    let mut prefill = worker(&model, "prefill");
    let decode = worker(&model, "decode");
    let r = router(
        &model,
        &[("--prefill", &prefill), ("--decode", &decode)],
        &[],
    );
    let http = reqwest::Client::new();
    // Warm up: the router has seen both workers.
    complete(&http, &r.url, &tokens(1, 20), 2).await;
    // Freeze the prefill worker so the request is certainly in its hands
    // when it dies.
    let pid = prefill.child.id() as i32;
    // SAFETY: signalling our own child process.
    unsafe { libc::kill(pid, libc::SIGSTOP) };
    let request = {
        let http = http.clone();
        let base = r.url.clone();
        let long = long.clone();
        tokio::spawn(async move { complete(&http, &base, &long, 6).await })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    prefill.kill();
    let v = tokio::time::timeout(Duration::from_secs(60), request)
        .await
        .expect("the request must not hang")
        .unwrap();
    assert_eq!(text(&v), expected[0]);
    assert_eq!(
        metric(&http, &r.url, "tandem_router_local_prefill_fallbacks_total").await,
        1.0,
        "the decode worker computed the prompt itself"
    );
    // With the prefill worker gone, new requests are served by the decode worker.
    let started = Instant::now();
    let v = complete(&http, &r.url, &long, 6).await;
    assert_eq!(text(&v), expected[0]);
    assert!(started.elapsed() < Duration::from_secs(30));
}

async fn health(http: &reqwest::Client, base: &str) -> u16 {
    match http
        .get(format!("{base}/health"))
        .timeout(Duration::from_secs(2))
        .send()
        .await
    {
        Ok(r) => r.status().as_u16(),
        Err(_) => 0,
    }
}

/// Polls until `/health` answers `want`; returns how long that took.
async fn wait_health(http: &reqwest::Client, base: &str, want: u16, limit: Duration) -> Duration {
    let started = Instant::now();
    while health(http, base).await != want {
        assert!(
            started.elapsed() < limit,
            "{base}/health did not turn {want} within {limit:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    started.elapsed()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_worker_leaves_routing_within_two_seconds_and_comes_back() {
    let dir = tempfile::tempdir().unwrap();
    let model = demo_model(dir.path());
    let decode = worker(&model, "decode");
    let r = router(&model, &[("--decode", &decode)], &[]);
    let http = reqwest::Client::new();
    wait_health(&http, &r.url, 200, Duration::from_secs(30)).await;
    let pid = decode.child.id() as i32;
    // SAFETY: signalling our own child process.
    unsafe { libc::kill(pid, libc::SIGSTOP) };
    let gone = wait_health(&http, &r.url, 503, Duration::from_secs(5)).await;
    assert!(gone < Duration::from_secs(2), "noticed after {gone:?}");
    // With no decode worker, a request gets an OpenAI error at once, not a hang.
    let resp = http
        .post(format!("{}/v1/completions", r.url))
        .json(&json!({"model": MODEL, "prompt": "hi", "max_tokens": 2}))
        .timeout(Duration::from_secs(10))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 503);
    let body: Value = resp.json().await.unwrap();
    assert!(body["error"]["message"]
        .as_str()
        .unwrap()
        .contains("no healthy decode worker"));
    unsafe { libc::kill(pid, libc::SIGCONT) };
    wait_health(&http, &r.url, 200, Duration::from_secs(5)).await;
    complete(&http, &r.url, &tokens(3, 30), 3).await;
}

/// The pids of `pid`'s children, from every thread's list (`serve`
/// restarts workers from its runtime's threads).
fn children(pid: u32) -> Vec<i32> {
    let mut pids = Vec::new();
    for task in std::fs::read_dir(format!("/proc/{pid}/task"))
        .unwrap()
        .flatten()
    {
        let list = std::fs::read_to_string(task.path().join("children")).unwrap_or_default();
        pids.extend(list.split_whitespace().map(|p| p.parse::<i32>().unwrap()));
    }
    pids.sort();
    pids
}

/// Whether `pid` is gone or a zombie nobody reaped yet.
fn exited(pid: i32) -> bool {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    stat.is_empty() || stat.contains(") Z ")
}

/// Waits for a child of `serve` that is not in `known`.
fn new_child(serve: u32, known: &[i32], limit: Duration) -> i32 {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(&p) = children(serve).iter().find(|p| !known.contains(p)) {
            return p;
        }
        assert!(
            Instant::now() < deadline,
            "serve did not restart the worker"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_restarts_a_dead_worker_and_gives_up_on_a_crash_loop() {
    let dir = tempfile::tempdir().unwrap();
    let model = demo_model(dir.path());
    let mut serve = Proc::start(&[
        "serve",
        "--model",
        &model,
        "--host",
        "127.0.0.1",
        "--port",
        "0",
        "--served-model-name",
        MODEL,
        "--kv-cache-memory",
        "64MiB",
        "--pd-threshold",
        "0",
    ]);
    let http = reqwest::Client::new();
    let spid = serve.child.id();
    let pids = children(spid);
    assert_eq!(pids.len(), 2, "one prefill and one decode worker");
    // The prefill worker starts first.
    let (mut victim, decode) = (pids[0], pids[1]);
    let mut known = pids.clone();
    // SAFETY: killing a child of our child, found through /proc.
    unsafe { libc::kill(victim, libc::SIGKILL) };
    victim = new_child(spid, &known, Duration::from_secs(20));
    known.push(victim);
    let restarts = ["tandem_worker_restarts_total", "role=\"prefill\""];
    assert_eq!(
        metric_with(&http, &serve.url, restarts[0], &restarts[1..]).await,
        1.0
    );
    // The router follows the new process: the prompt is prefilled there.
    let path = ["tandem_router_requests_total", "prefill_then_decode"];
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let before = metric_with(&http, &serve.url, path[0], &path[1..]).await;
        complete(&http, &serve.url, &tokens(5, 40), 2).await;
        if metric_with(&http, &serve.url, path[0], &path[1..]).await > before {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no request reached the restarted prefill worker"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Four more quick deaths in a row: serve gives up and stops everything.
    for _ in 0..4 {
        unsafe { libc::kill(victim, libc::SIGKILL) };
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if serve.child.try_wait().unwrap().is_some() {
                break;
            }
            if let Some(&p) = children(spid).iter().find(|p| !known.contains(p)) {
                victim = p;
                known.push(p);
                break;
            }
            assert!(
                Instant::now() < deadline,
                "serve neither restarted the worker nor exited"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
    let deadline = Instant::now() + Duration::from_secs(20);
    let status = loop {
        if let Some(s) = serve.child.try_wait().unwrap() {
            break s;
        }
        assert!(
            Instant::now() < deadline,
            "serve must give up on a crash-looping worker"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(!status.success());
    assert!(exited(decode), "the other worker was stopped too");
    serve.kill();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unpulled_kv_is_freed_when_its_lease_expires() {
    let dir = tempfile::tempdir().unwrap();
    let model = demo_model(dir.path());
    let prefill = Proc::start(&[
        "worker",
        "--role",
        "prefill",
        "--model",
        &model,
        "--port",
        "0",
        "--served-model-name",
        MODEL,
        "--kv-cache-memory",
        "64MiB",
        "--internal-token",
        "t0k",
        "--kv-lease-timeout",
        "0.5",
    ]);
    let http = reqwest::Client::new();
    let request = json!({
        "request": {
            "prompt_tokens": tokens(5, 40),
            "params": {"temperature": 0.0},
            "stop": {"max_tokens": 8, "min_tokens": 0, "ignore_eos": true, "stop_token_ids": []},
        },
        "stop_strings": [], "include_stop_str_in_output": false, "skip_special_tokens": true,
    });
    // Without the token the internal API refuses.
    let denied = http
        .post(format!("{}/internal/prefill", prefill.url))
        .json(&request)
        .send()
        .await
        .unwrap();
    assert_eq!(denied.status(), 401);
    let resp: Value = http
        .post(format!("{}/internal/prefill", prefill.url))
        .header("x-tandem-internal-token", "t0k")
        .json(&request)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        resp["kv"]["block_ids"].as_array().unwrap().len(),
        3,
        "{resp}"
    );
    let usage = || metric(&http, &prefill.url, "vllm:kv_cache_usage_perc");
    assert!(usage().await > 0.0, "the prompt's blocks are held");
    tokio::time::sleep(Duration::from_millis(1200)).await;
    assert_eq!(
        metric(&http, &prefill.url, "tandem_kv_leases_expired_total").await,
        1.0
    );
    assert_eq!(usage().await, 0.0, "expired blocks are free again");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_kv_handle_for_other_tokens_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let model = demo_model(dir.path());
    let decode = worker(&model, "decode");
    let body = json!({
        "request": {
            "request": {
                "prompt_tokens": tokens(9, 20),
                "params": {"temperature": 0.0},
                "stop": {"max_tokens": 4, "min_tokens": 0, "ignore_eos": true, "stop_token_ids": []},
            },
            "stop_strings": [], "include_stop_str_in_output": false, "skip_special_tokens": true,
        },
        "output_tokens": [42],
        // 20 tokens = 2 blocks, 1 full: its hash cannot be 1.
        "kv": {"agent": "AAAA", "lease": 1, "block_ids": [0, 1], "block_hashes": [1], "num_tokens": 20},
    });
    let text = reqwest::Client::new()
        .post(format!("{}/internal/decode", decode.url))
        .header("x-tandem-internal-token", "t0k")
        .json(&body)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let line: Value = serde_json::from_str(text.lines().next().unwrap()).unwrap();
    assert_eq!(line["error"]["kind"], "rejected", "{text}");
    assert!(
        line["error"]["message"]
            .as_str()
            .unwrap()
            .contains("block hashes"),
        "{text}"
    );
    // A handle whose agent metadata is not base64 is refused before the
    // engine sees it, as a WireError the router can read.
    let mut bad = body.clone();
    bad["kv"]["agent"] = json!("not base64!");
    let resp = reqwest::Client::new()
        .post(format!("{}/internal/decode", decode.url))
        .header("x-tandem-internal-token", "t0k")
        .json(&bad)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 400);
    let err: Value = resp.json().await.unwrap();
    assert_eq!(err["kind"], "rejected", "{err}");
    assert!(
        err["message"].as_str().unwrap().contains("kv.agent"),
        "{err}"
    );
}
