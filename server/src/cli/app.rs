//! What every serving command does the same way: find the model, describe
//! it to the API layer, listen until SIGTERM/SIGINT and drain.

use std::future::IntoFuture;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context};
use tandem_engine::demo::{write_demo_model, DemoSize, DEFAULT_SEED};
use tandem_engine::guided::GuidanceCompiler;
use tandem_engine::ModelMeta;

use super::args::HttpArgs;
use crate::api::chat_template::ChatTemplate;
use crate::api::{self, AppState, ModelInfo};
use crate::rag::embedder::{self, EmbedderArgs};
use crate::rag::{self, RagArgs};

/// Where `tandem serve` without `--model` writes and finds the demo model.
const DEMO_DIR: &str = "demo-models/small";

/// `--model`, or the demo model (written on first use).
pub fn model_dir(args: &HttpArgs) -> anyhow::Result<PathBuf> {
    if let Some(dir) = &args.model {
        return Ok(dir.clone());
    }
    let info = write_demo_model(Path::new(DEMO_DIR), DemoSize::Small, DEFAULT_SEED)
        .context("writing the demo model")?;
    eprintln!(
        "no --model given: serving the demo model in {} (RANDOM weights: its text is gibberish)",
        info.dir.display()
    );
    Ok(info.dir)
}

pub fn load_meta(dir: &Path) -> anyhow::Result<ModelMeta> {
    ModelMeta::load(dir).with_context(|| {
        format!(
            "loading {} (for a local test model run `tandem demo-model --out DIR`)",
            dir.display()
        )
    })
}

/// What the API layer knows about the served model.
pub fn model_info(dir: &Path, meta: &ModelMeta, args: &HttpArgs) -> anyhow::Result<ModelInfo> {
    let own_len = meta.config.max_position_embeddings;
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
        None => meta.tokenizer.chat_template.clone(),
    };
    let chat_template = template
        .map(ChatTemplate::new)
        .transpose()
        .context("the chat template does not compile")?;
    Ok(ModelInfo {
        names: served_names(dir, args),
        root: dir.display().to_string(),
        created: api::unix_now(),
        max_model_len,
        vocab_size: meta.config.vocab_size,
        tokenizer: meta.tokenizer.clone(),
        chat_template,
        defaults: meta.generation.clone(),
        guidance: Arc::new(GuidanceCompiler::new(
            meta.tokenizer.clone(),
            meta.config.vocab_size,
            &meta.eos_token_ids,
        )),
        tool_call_format: args.tool_call_parser,
    })
}

pub fn served_names(dir: &Path, args: &HttpArgs) -> Vec<String> {
    if args.served_model_name.is_empty() {
        vec![dir.display().to_string()]
    } else {
        args.served_model_name.clone()
    }
}

/// The API key from `--api-key` (or `TANDEM_API_KEY`) or the first line
/// of `--api-key-file` (a mounted Secret); never logged.
pub fn api_key(args: &HttpArgs) -> anyhow::Result<Option<String>> {
    let from_file = match &args.api_key_file {
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("reading --api-key-file {}", path.display()))?;
            let key = text.lines().next().unwrap_or("").trim().to_string();
            if key.is_empty() {
                bail!(
                    "--api-key-file {} is empty; put the key on its first line",
                    path.display()
                );
            }
            Some(key)
        }
        None => None,
    };
    if from_file.is_some() && args.api_key.as_deref().is_some_and(|k| !k.is_empty()) {
        bail!("give the API key once: --api-key (or TANDEM_API_KEY) or --api-key-file, not both");
    }
    Ok(from_file.or_else(|| args.api_key.clone().filter(|k| !k.is_empty())))
}

/// Adds the RAG embedder: a model or URL the user named must load; the
/// default one may be absent (then only RAG and /v1/embeddings are off).
pub fn with_embedder(state: AppState, args: &EmbedderArgs) -> anyhow::Result<AppState> {
    if args.no_embedder {
        return Ok(state);
    }
    match embedder::from_args(args) {
        Ok(e) => Ok(state.with_embedder(e)),
        Err(e) if !args.is_explicit() => {
            tracing::warn!("RAG and /v1/embeddings are off: {e}");
            Ok(state)
        }
        Err(e) => Err(e).context("loading the embedding model"),
    }
}

/// Adds the RAG service over the state's embedder (unless `--no-rag`).
pub fn with_rag(state: AppState, args: &RagArgs) -> anyhow::Result<AppState> {
    Ok(match rag::start(state.embedder.clone(), args)? {
        Some(service) => state.with_rag(service),
        None => state,
    })
}

pub fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")
}

/// Flips to true on SIGTERM/SIGINT. Needs a Tokio runtime.
pub fn stop_signal() -> tokio::sync::watch::Receiver<bool> {
    let (tx, rx) = tokio::sync::watch::channel(false);
    tokio::spawn(async move {
        shutdown_signal().await;
        tracing::info!("shutting down: refusing new connections, finishing in-flight requests");
        let _ = tx.send(true);
    });
    rx
}

/// Serves `app` on `addr` until `stop` flips, then lets in-flight requests
/// finish for up to `timeout` and shuts the backend down.
pub async fn listen(
    app: axum::Router,
    state: AppState,
    addr: SocketAddr,
    timeout: Duration,
    what: &str,
    stop: tokio::sync::watch::Receiver<bool>,
) -> anyhow::Result<()> {
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
        "tandem: {what} serving {:?} on http://{shown} (listening on {local})",
        state.model.name()
    );
    let rx = stop;
    let mut stop = rx.clone();
    let server = axum::serve(listener, app).with_graceful_shutdown(async move {
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
    rag::persist_on_shutdown(state.rag.as_ref());
    tracing::info!("stopped");
    Ok(())
}

pub async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .expect("installing the SIGTERM handler");
    tokio::select! {
        _ = ctrl_c => {}
        _ = term.recv() => {}
    }
}
