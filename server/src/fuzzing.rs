//! Entry points for the cargo-fuzz targets in `fuzz/` (feature
//! `fuzzing`). Each takes the fuzzer's bytes and panics only when a
//! property the server promises is broken:
//!
//! * [`openai_request`]: an OpenAI route answers a success or a client
//!   error in OpenAI's error shape, whatever the body;
//! * [`chat_template`]: a message's content comes out of the demo chat
//!   template verbatim, never interpreted;
//! * [`worker_body`]: the worker's wire types parse or refuse any bytes;
//! * [`rag_request`]: a KAITO route (or chat with `index_name`) answers a
//!   success or a client error;
//! * [`persisted_index`]: loading a persisted index with one file
//!   replaced succeeds or is refused, and the server goes on serving.
//!
//! Requests go through the real axum router over the scripted backend of
//! `api::testing`, as the proptest stand-ins in `api/tests/fuzz.rs` do.
//! What is slow to build (the tokenizer, the runtime, temporary storage)
//! is built once per process.

use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};

use axum::body::Body;
use axum::http::StatusCode;
use serde_json::{json, Value};

use crate::api::chat_template::{ChatTemplate, Conversation, TemplateMessage};
use crate::api::testing::{answer, check_openai_answer, state, walk, Mode};
use crate::api::{router, AppState};
use crate::rag::testing::service;
use crate::rag::RagService;

/// The routes [`openai_request`] picks from with its first byte.
pub const OPENAI_ROUTES: [&str; 3] = ["/v1/chat/completions", "/v1/completions", "/tokenize"];

/// The KAITO routes [`rag_request`] picks from with its first byte (all
/// POST); the last is chat, whose body names the index.
pub const RAG_ROUTES: [&str; 5] = [
    "/index",
    "/retrieve",
    "/indexes/docs/documents",
    "/indexes/docs/documents/delete",
    "/v1/chat/completions",
];

/// The documents of index `docs`, which every RAG case starts with.
pub const RAG_DOCS: [&str; 2] = [
    "The zebra lives in Africa.",
    "Paris is the capital of France.",
];

/// First byte picks a route of [`OPENAI_ROUTES`], the rest is the body.
pub fn openai_request(data: &[u8]) {
    openai_status(data);
}

/// [`openai_request`], returning the answer's status (None: no input).
fn openai_status(data: &[u8]) -> Option<StatusCode> {
    let (&pick, body) = data.split_first()?;
    let path = OPENAI_ROUTES[usize::from(pick) % OPENAI_ROUTES.len()];
    let body = Body::from(body.to_vec());
    Some(runtime().block_on(check_openai_answer(openai_app(), path, body)))
}

/// The bytes (lossy UTF-8) as a user message's content must appear in the
/// rendered prompt unchanged.
pub fn chat_template(data: &[u8]) {
    static TEMPLATE: OnceLock<ChatTemplate> = OnceLock::new();
    let template = TEMPLATE
        .get_or_init(|| ChatTemplate::new(tandem_engine::demo::CHAT_TEMPLATE.to_string()).unwrap());
    let content = String::from_utf8_lossy(data).into_owned();
    let conversation = Conversation {
        messages: vec![TemplateMessage::text("user", content.clone())],
        tools: None,
        add_generation_prompt: true,
    };
    let out = template
        .render(&conversation, Some("<s>"), None)
        .unwrap_or_else(|e| panic!("plain text did not render: {e:?}"));
    assert!(out.contains(&content), "{out:?} lost {content:?}");
}

/// The worker's internal request bodies parse or are refused.
pub fn worker_body(data: &[u8]) {
    use crate::worker::wire::{DecodeRequest, ReleaseRequest};
    let _ = serde_json::from_slice::<DecodeRequest>(data);
    let _ = serde_json::from_slice::<ReleaseRequest>(data);
    let _ = serde_json::from_slice::<tandem_engine::serving::ServingRequest>(data);
}

/// First byte picks a route of [`RAG_ROUTES`], the rest is the body.
/// Every case starts from the same state: one RAG service for the run
/// whose indexes are dropped before each case and `docs` ([`RAG_DOCS`])
/// indexed again, so a case reproduces on its own and memory does not
/// grow with the run. (Not a new service per case: dropping one drops its
/// Prometheus histograms, and metrics-util's `AtomicBucket` has no `Drop`
/// that frees its blocks, which LeakSanitizer rightly reports.)
pub fn rag_request(data: &[u8]) {
    rag_status(data);
}

/// [`rag_request`], returning the answer's status (None: no input).
fn rag_status(data: &[u8]) -> Option<StatusCode> {
    static APP: OnceLock<(axum::Router, Arc<RagService>)> = OnceLock::new();
    let (&pick, body) = data.split_first()?;
    let path = RAG_ROUTES[usize::from(pick) % RAG_ROUTES.len()];
    let (app, svc) = APP.get_or_init(|| rag_app(&scratch().join("rag")));
    let status = runtime().block_on(async {
        reset(svc).await;
        answer(app, "POST", path, Body::from(body.to_vec())).await.0
    });
    Some(status)
}

/// First byte picks one file of a valid persisted index (in sorted path
/// order), the rest replaces its contents; a replaced data file gets its
/// checksum in the manifest updated, so the bytes reach the parser
/// instead of stopping at the checksum. Loading that copy over index
/// `docs` must succeed or be refused, and `GET /indexes` still answer.
pub fn persisted_index(data: &[u8]) {
    persisted_status(data);
}

/// [`persisted_index`], returning the load's status (None: no input).
fn persisted_status(data: &[u8]) -> Option<StatusCode> {
    let (&pick, contents) = data.split_first()?;
    let fixture = persisted_fixture();
    let file = &fixture.files[usize::from(pick) % fixture.files.len()];
    let case = fixture.root.join("case");
    let _ = std::fs::remove_dir_all(&case);
    copy_dir(&fixture.root.join("pristine"), &case);
    std::fs::write(case.join(file), contents).unwrap();
    if file != Path::new("manifest.json") {
        reseal(&case, file, contents);
    }
    let status = runtime().block_on(async {
        let uri = "/load/docs?path=case&overwrite=true";
        let (status, _) = answer(&fixture.app, "POST", uri, Body::empty()).await;
        answer(&fixture.app, "GET", "/indexes", Body::empty()).await;
        status
    });
    Some(status)
}

/// The one runtime every entry point runs its requests on.
fn runtime() -> &'static tokio::runtime::Runtime {
    static RT: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    RT.get_or_init(|| {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
    })
}

/// The scripted-backend state (model "m", 1024 waiting, no key) with
/// `max_model_len`; the demo tokenizer takes longer to load than a case.
fn base_state(max_model_len: usize) -> AppState {
    state(Mode::Script, 1024, None, max_model_len).0
}

/// Room for the seeds' tool definitions in the prompt (the unit tests'
/// 64 tokens refuse them before the tool grammar is compiled).
fn openai_app() -> &'static axum::Router {
    static APP: OnceLock<axum::Router> = OnceLock::new();
    APP.get_or_init(|| router(base_state(512)))
}

/// Where the RAG targets store indexes: `tandem-fuzz-<pid>` under
/// `$TANDEM_FUZZ_TMP` if set, else under memory (`/dev/shm`) where there
/// is one, so the write-ahead log's fsyncs cost nothing. A static is never
/// dropped, so the directory goes at exit (an `atexit` hook) or, after a
/// crash or abort, when the next process finds its owner gone.
fn scratch() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    extern "C" fn remove_at_exit() {
        if let Some(dir) = DIR.get() {
            let _ = std::fs::remove_dir_all(dir);
        }
    }
    DIR.get_or_init(|| {
        let base = std::env::var_os("TANDEM_FUZZ_TMP")
            .map(PathBuf::from)
            .or_else(|| Some(PathBuf::from("/dev/shm")).filter(|p| p.is_dir()))
            .unwrap_or_else(std::env::temp_dir);
        remove_orphaned_scratch(&base);
        let dir = base.join(format!("{SCRATCH_PREFIX}{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        // SAFETY: registers a plain function; it only reads a set OnceLock.
        unsafe { libc::atexit(remove_at_exit) };
        dir
    })
}

const SCRATCH_PREFIX: &str = "tandem-fuzz-";

/// Removes the scratch directories under `base` of processes that are gone.
fn remove_orphaned_scratch(base: &Path) {
    for entry in std::fs::read_dir(base).into_iter().flatten().flatten() {
        let name = entry.file_name();
        let pid = name
            .to_str()
            .and_then(|n| n.strip_prefix(SCRATCH_PREFIX))
            .and_then(|p| p.parse::<u32>().ok());
        if pid.is_some_and(|pid| !Path::new(&format!("/proc/{pid}")).exists()) {
            let _ = std::fs::remove_dir_all(entry.path());
        }
    }
}

/// A router over a new RAG service storing under `dir`, and the service.
fn rag_app(dir: &Path) -> (axum::Router, Arc<RagService>) {
    static STATE: OnceLock<AppState> = OnceLock::new();
    let svc = service(dir);
    let state = STATE.get_or_init(|| base_state(256)).clone();
    (router(state.with_rag(svc.clone())), svc)
}

/// Drops every index of `svc`, then indexes [`RAG_DOCS`] as `docs`.
async fn reset(svc: &Arc<RagService>) {
    for name in svc.list_indexes().unwrap() {
        svc.delete_index(&name).await.unwrap();
    }
    let docs = RAG_DOCS
        .iter()
        .map(|text| crate::rag::types::Document {
            text: text.to_string(),
            ..Default::default()
        })
        .collect();
    svc.index_documents("docs", docs).await.unwrap();
}

/// A server with RAG and, beside its storage, a valid persisted index.
struct PersistedFixture {
    app: axum::Router,
    /// The storage root; the index is in `pristine/` under it.
    root: PathBuf,
    /// Its files, relative to `pristine/`, sorted.
    files: Vec<PathBuf>,
}

fn persisted_fixture() -> &'static PersistedFixture {
    static FIXTURE: OnceLock<PersistedFixture> = OnceLock::new();
    FIXTURE.get_or_init(|| {
        let root = scratch().join("persisted");
        let (app, svc) = rag_app(&root);
        runtime().block_on(async {
            reset(&svc).await;
            answer(&app, "POST", "/persist/docs?path=pristine", Body::empty()).await;
        });
        let pristine = root.join("pristine");
        let mut files: Vec<PathBuf> = walk(&pristine)
            .into_iter()
            .map(|p| p.strip_prefix(&pristine).unwrap().to_path_buf())
            .collect();
        files.sort();
        assert!(!files.is_empty(), "nothing persisted under {pristine:?}");
        PersistedFixture { app, root, files }
    })
}

/// Copies a directory tree (a persisted index: plain files). Read and
/// write, not `fs::copy`: libFuzzer's timeout alarm interrupts system
/// calls, and `fs::copy` returns the EINTR where read and write retry.
fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap().flatten() {
        let target = to.join(entry.file_name());
        if entry.path().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::write(target, std::fs::read(entry.path()).unwrap()).unwrap();
        }
    }
}

/// Writes `contents`' sha256 into the manifest's checksum for `file`.
fn reseal(dir: &Path, file: &Path, contents: &[u8]) {
    use sha2::{Digest, Sha256};
    let key = match file.to_str() {
        Some("documents.jsonl") => "documents_sha256",
        Some("vectors.f32") => "vectors_sha256",
        _ => return,
    };
    let path = dir.join("manifest.json");
    let mut manifest: Value = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
    manifest[key] = json!(hex::encode(Sha256::digest(contents)));
    std::fs::write(path, manifest.to_string()).unwrap();
}

#[cfg(test)]
#[path = "fuzzing_tests.rs"]
mod tests;
