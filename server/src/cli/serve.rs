//! `tandem serve` and `tandem worker --role both`: load a model, start the
//! engine, and serve the OpenAI API until SIGTERM/SIGINT, then drain.

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use std::future::IntoFuture;

use anyhow::{bail, Context};
use tandem_engine::demo::{write_demo_model, DemoSize, DEFAULT_SEED};
use tandem_engine::scheduler::SchedulerConfig;
use tandem_engine::{parse_dtype, EngineOptions, LoadedModel};

use crate::api::chat_template::ChatTemplate;
use crate::api::{self, AppState, ModelInfo};

/// Where `tandem serve` without `--model` writes and finds the demo model.
const DEMO_DIR: &str = "demo-models/small";

/// Options every API server shares, named as in vLLM where vLLM has them.
#[derive(clap::Args, Debug, Clone)]
pub struct ServerArgs {
    /// Hugging Face model directory. Without it, the random-weight demo model
    /// `small` is written to ./demo-models/small (once) and served.
    #[arg(long)]
    model: Option<PathBuf>,
    /// Names clients use in `model`; the first is reported (default: --model as given).
    #[arg(long, num_args = 1..)]
    served_model_name: Vec<String>,
    #[arg(long, default_value = "0.0.0.0")]
    host: IpAddr,
    /// 0 picks a free port (printed once listening).
    #[arg(long, default_value_t = 8000)]
    port: u16,
    /// Require `Authorization: Bearer <key>` on /v1 routes.
    #[arg(long, env = "TANDEM_API_KEY", hide_env_values = true)]
    api_key: Option<String>,
    /// Most sequences waiting for their first token; more are refused with 429.
    #[arg(long, default_value_t = 1024)]
    max_waiting: usize,
    /// Seconds to let in-flight requests finish after SIGTERM/SIGINT.
    #[arg(long, default_value_t = 30.0)]
    shutdown_timeout: f64,
    /// Compute dtype: f32 or bf16.
    #[arg(long, default_value = "f32")]
    dtype: String,
    /// Cap the context (prompt plus output) below the model's own.
    #[arg(long)]
    max_model_len: Option<usize>,
    #[arg(long, default_value_t = 256)]
    max_num_seqs: usize,
    #[arg(long, default_value_t = 2048)]
    max_num_batched_tokens: usize,
    /// Tokens per KV block.
    #[arg(long, default_value_t = 16)]
    block_size: usize,
    #[arg(long)]
    no_enable_prefix_caching: bool,
    /// KV-cache size, e.g. 512MiB or 2GiB (default: a quarter of free memory, at most 4 GiB).
    #[arg(long, value_parser = parse_bytes)]
    kv_cache_memory: Option<usize>,
    /// Seed for requests that carry none.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// A Jinja chat template file to use instead of the model's own.
    #[arg(long)]
    chat_template: Option<PathBuf>,
    #[command(flatten)]
    rag: crate::rag::RagArgs,
}

#[derive(clap::Args, Debug)]
pub struct ServeArgs {
    /// Run prefill and decode in one engine. This is the only mode until P/D
    /// serving lands (issue 7), so it is also the default.
    #[arg(long)]
    colocated: bool,
    #[command(flatten)]
    server: ServerArgs,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Role {
    Both,
    Prefill,
    Decode,
}

#[derive(clap::Args, Debug)]
pub struct WorkerArgs {
    #[arg(long, value_enum)]
    role: Role,
    #[command(flatten)]
    server: ServerArgs,
}

pub fn serve(args: ServeArgs) -> anyhow::Result<()> {
    let _ = args.colocated;
    run(args.server)
}

pub fn worker(args: WorkerArgs) -> anyhow::Result<()> {
    match args.role {
        Role::Both => run(args.server),
        Role::Prefill | Role::Decode => bail!(
            "--role {:?} is not yet implemented: prefill and decode workers come with issue 7; \
             use --role both",
            args.role
        ),
    }
}

/// `512MiB`, `2GiB`, `1G`, or plain bytes.
fn parse_bytes(s: &str) -> Result<usize, String> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let n: usize = num
        .parse()
        .map_err(|_| format!("{s:?} is not a size like 512MiB"))?;
    let mult: usize = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kb" | "kib" => 1 << 10,
        "m" | "mb" | "mib" => 1 << 20,
        "g" | "gb" | "gib" => 1 << 30,
        other => return Err(format!("unknown size unit {other:?}; use KiB, MiB or GiB")),
    };
    n.checked_mul(mult)
        .ok_or_else(|| format!("{s:?} is too large"))
}

fn run(args: ServerArgs) -> anyhow::Result<()> {
    let model_dir = match &args.model {
        Some(dir) => dir.clone(),
        None => {
            let info = write_demo_model(
                std::path::Path::new(DEMO_DIR),
                DemoSize::Small,
                DEFAULT_SEED,
            )
            .context("writing the demo model")?;
            eprintln!(
                "no --model given: serving the demo model in {} (RANDOM weights: its text is gibberish)",
                info.dir.display()
            );
            info.dir
        }
    };
    let model = LoadedModel::load(&model_dir, parse_dtype(&args.dtype)?).with_context(|| {
        format!(
            "loading {} (for a local test model run `tandem demo-model --out DIR`)",
            model_dir.display()
        )
    })?;
    let own_len = model.max_model_len();
    let max_model_len = match args.max_model_len {
        Some(m) if m > own_len => {
            bail!("--max-model-len {m} exceeds the model's context length of {own_len}")
        }
        Some(m) => m,
        None => own_len,
    };
    let template = match &args.chat_template {
        Some(path) => Some(
            std::fs::read_to_string(path)
                .with_context(|| format!("reading --chat-template {}", path.display()))?,
        ),
        None => model.tokenizer.chat_template.clone(),
    };
    let chat_template = template
        .map(ChatTemplate::new)
        .transpose()
        .context("the chat template does not compile")?;
    let engine = model.start_engine(&EngineOptions {
        scheduler: SchedulerConfig {
            max_num_seqs: args.max_num_seqs,
            max_num_batched_tokens: args.max_num_batched_tokens,
            block_size: args.block_size,
            enable_prefix_caching: !args.no_enable_prefix_caching,
        },
        kv_cache_memory: args.kv_cache_memory,
        seed: args.seed,
    })?;
    let names = if args.served_model_name.is_empty() {
        vec![model_dir.display().to_string()]
    } else {
        args.served_model_name.clone()
    };
    let info = ModelInfo {
        names,
        root: model_dir.display().to_string(),
        created: api::unix_now(),
        max_model_len,
        vocab_size: model.config.vocab_size,
        tokenizer: model.tokenizer.clone(),
        chat_template,
        defaults: model.generation.clone(),
    };
    drop(model);
    let api_key = args.api_key.clone().filter(|k| !k.is_empty());
    let state = AppState::new(info, Arc::new(engine), args.max_waiting, api_key);
    let (state, _rag) = crate::rag::attach(state, &args.rag)?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    let timeout = Duration::from_secs_f64(args.shutdown_timeout.max(0.0));
    runtime.block_on(listen(
        state,
        SocketAddr::new(args.host, args.port),
        timeout,
    ))
}

async fn listen(state: AppState, addr: SocketAddr, timeout: Duration) -> anyhow::Result<()> {
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .with_context(|| format!("binding {addr}"))?;
    let local = listener.local_addr()?;
    let shown = if local.ip().is_unspecified() {
        SocketAddr::new([127, 0, 0, 1].into(), local.port())
    } else {
        local
    };
    println!(
        "tandem: serving {:?} on http://{shown} (OpenAI API under /v1; listening on {local})",
        state.model.name()
    );
    let (tx, rx) = tokio::sync::watch::channel(false);
    tokio::spawn(async move {
        shutdown_signal().await;
        tracing::info!("shutting down: refusing new connections, finishing in-flight requests");
        let _ = tx.send(true);
    });
    let mut stop = rx.clone();
    let server =
        axum::serve(listener, api::router(state.clone())).with_graceful_shutdown(async move {
            let _ = stop.wait_for(|&s| s).await;
        });
    let mut stop = rx;
    let deadline = async move {
        let _ = stop.wait_for(|&s| s).await;
        tokio::time::sleep(timeout).await;
    };
    tokio::select! {
        served = server.into_future() => served.context("serving HTTP")?,
        _ = deadline => tracing::warn!(
            "requests still running after --shutdown-timeout; aborting them"
        ),
    }
    state.backend.shutdown();
    crate::rag::persist_on_shutdown(state.rag.as_ref());
    tracing::info!("stopped");
    Ok(())
}

async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .expect("installing the SIGTERM handler");
    tokio::select! {
        _ = ctrl_c => {}
        _ = term.recv() => {}
    }
}

#[cfg(test)]
mod tests {
    use super::parse_bytes;

    #[test]
    fn sizes_parse_with_units() {
        assert_eq!(parse_bytes("1024"), Ok(1024));
        assert_eq!(parse_bytes("64MiB"), Ok(64 << 20));
        assert_eq!(parse_bytes("2G"), Ok(2 << 30));
        assert!(parse_bytes("lots").is_err());
        assert!(parse_bytes("3 parsecs").is_err());
    }
}
