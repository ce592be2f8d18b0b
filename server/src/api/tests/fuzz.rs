//! Hostile input at every parser the network reaches, as property tests:
//! the stand-in for cargo-fuzz where no nightly toolchain is at hand (CI
//! runs these; `TANDEM_FUZZ_CASES` raises the count for a longer local
//! run). Whatever the body, the answer is a success or a client error in
//! the route's own error shape, never a panic or a 500:
//!
//! * OpenAI request parsing and validation (chat and completions): valid
//!   bodies with fields replaced by arbitrary JSON, and arbitrary bytes;
//! * chat template rendering: message contents full of template syntax
//!   come out verbatim, never interpreted;
//! * KAITO RAG request parsing, and the persisted-index reader given
//!   corrupted files.

use proptest::prelude::*;
use serde_json::{json, Value};

use super::*;
use crate::api::chat_template::{ChatTemplate, Conversation, TemplateMessage};
use crate::api::testing::{answer, check_openai_answer, walk};

fn cases(default: u32) -> ProptestConfig {
    let cases = std::env::var("TANDEM_FUZZ_CASES")
        .ok()
        .and_then(|c| c.parse().ok())
        .unwrap_or(default);
    ProptestConfig {
        cases,
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

/// Any JSON value, a few levels deep, with the awkward corners: huge and
/// negative numbers, NaN-like strings, deep nesting, empty containers.
fn any_json() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        any::<f64>()
            .prop_filter("JSON has no NaN", |f| f.is_finite())
            .prop_map(Value::from),
        ".{0,40}".prop_map(Value::from),
        prop::sample::select(vec!["", "NaN", "-1", "1e309", "{{ x }}", "\u{0}", "é"])
            .prop_map(Value::from),
    ];
    leaf.prop_recursive(3, 24, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            prop::collection::btree_map("[a-z_]{1,12}", inner, 0..4)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

const CHAT_KEYS: &[&str] = &[
    "model",
    "messages",
    "max_tokens",
    "max_completion_tokens",
    "temperature",
    "top_p",
    "top_k",
    "min_p",
    "n",
    "stop",
    "stop_token_ids",
    "seed",
    "logprobs",
    "top_logprobs",
    "stream",
    "stream_options",
    "response_format",
    "guided_json",
    "guided_regex",
    "guided_choice",
    "guided_grammar",
    "tools",
    "tool_choice",
    "parallel_tool_calls",
    "functions",
    "function_call",
    "presence_penalty",
    "frequency_penalty",
    "repetition_penalty",
    "ignore_eos",
    "logit_bias",
    "index_name",
    "min_tokens",
];

/// A valid body with up to three fields (or message parts) replaced.
fn mutated(base: Value, keys: &'static [&'static str]) -> impl Strategy<Value = Value> {
    let edit = (prop::sample::select(keys), any_json());
    prop::collection::vec(edit, 1..4).prop_map(move |edits| {
        let mut body = base.clone();
        for (key, value) in edits {
            body[key] = value;
        }
        body
    })
}

fn chat_base() -> Value {
    json!({"model": "m", "max_tokens": 4,
           "messages": [{"role": "system", "content": "s"}, {"role": "user", "content": "hi"}]})
}

fn completion_base() -> Value {
    json!({"model": "m", "prompt": "hello", "max_tokens": 4})
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

/// One app for every case (building the demo tokenizer takes longer than
/// a case).
fn shared_app() -> axum::Router {
    static APP: std::sync::OnceLock<axum::Router> = std::sync::OnceLock::new();
    APP.get_or_init(|| app(Mode::Script, 1024, None).0).clone()
}

proptest! {
    #![proptest_config(cases(192))]

    #[test]
    fn chat_bodies_never_break_the_server(body in mutated(chat_base(), CHAT_KEYS)) {
        let app = shared_app();
        runtime().block_on(check_openai_answer(&app, "/v1/chat/completions", Body::from(body.to_string())));
    }

    #[test]
    fn completion_bodies_never_break_the_server(
        body in mutated(completion_base(), &["prompt", "echo", "suffix", "best_of", "logprobs", "n", "stop", "max_tokens", "stream", "guided_regex", "response_format"]),
    ) {
        let app = shared_app();
        runtime().block_on(check_openai_answer(&app, "/v1/completions", Body::from(body.to_string())));
    }

    #[test]
    fn arbitrary_bytes_are_client_errors(bytes in prop::collection::vec(any::<u8>(), 0..256)) {
        let app = shared_app();
        let rt = runtime();
        for path in ["/v1/chat/completions", "/v1/completions", "/tokenize"] {
            rt.block_on(check_openai_answer(&app, path, Body::from(bytes.clone())));
        }
    }

    /// Contents are data to the template, whatever they look like.
    #[test]
    fn hostile_message_contents_render_verbatim(
        content in prop_oneof![".{0,60}", "(\\{\\{|\\{%|%\\}|\\}\\}|<\\|im_end\\|>|raise_exception|[a-z ]){0,20}"],
    ) {
        let template = ChatTemplate::new(tandem_engine::demo::CHAT_TEMPLATE.to_string()).unwrap();
        let conversation = Conversation {
            messages: vec![TemplateMessage::text("user", content.clone())],
            tools: None,
            add_generation_prompt: true,
        };
        let out = template.render(&conversation, Some("<s>"), None).unwrap();
        prop_assert!(out.contains(&content), "{out:?} lost {content:?}");
    }
}

/// KAITO routes answer in FastAPI's shape; only the status is checked.
async fn check_rag_answer(app: &axum::Router, method: &str, path: &str, body: Vec<u8>) {
    answer(app, method, path, Body::from(body)).await;
}

proptest! {
    #![proptest_config(cases(64))]

    #[test]
    fn rag_bodies_never_break_the_server(
        index in mutated(json!({"index_name": "docs", "documents": [{"text": "a b c"}]}), &["index_name", "documents"]),
        retrieve in mutated(json!({"index_name": "docs", "query": "a", "max_node_count": 2}), &["index_name", "query", "max_node_count", "metadata_filter"]),
        raw in prop::collection::vec(any::<u8>(), 0..64),
    ) {
        let dir = tempfile::tempdir().unwrap();
        let app = router(test_state(64).with_rag(crate::rag::testing::service(dir.path())));
        let rt = runtime();
        rt.block_on(check_rag_answer(&app, "POST", "/index", index.to_string().into_bytes()));
        rt.block_on(check_rag_answer(&app, "POST", "/retrieve", retrieve.to_string().into_bytes()));
        rt.block_on(check_rag_answer(&app, "POST", "/indexes/docs/documents", raw.clone()));
        rt.block_on(check_rag_answer(&app, "POST", "/indexes/docs/documents/delete", raw));
    }

    /// A persisted index whose files were damaged loads or is refused with
    /// a message; the server stays up.
    #[test]
    fn a_damaged_persisted_index_is_refused_not_fatal(
        at in any::<prop::sample::Index>(),
        flips in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..6),
        truncate in any::<bool>(),
    ) {
        let dir = tempfile::tempdir().unwrap();
        let app = router(test_state(64).with_rag(crate::rag::testing::service(dir.path())));
        let rt = runtime();
        let body = json!({"index_name": "docs", "documents": [{"text": "one two"}, {"text": "three"}]});
        rt.block_on(check_rag_answer(&app, "POST", "/index", body.to_string().into_bytes()));
        let store = dir.path().join("persisted");
        let uri = format!("/persist/docs?path={}", store.display());
        rt.block_on(check_rag_answer(&app, "POST", &uri, Vec::new()));
        let mut files: Vec<_> = walk(&store);
        files.sort();
        prop_assume!(!files.is_empty());
        let file = &files[at.index(files.len())];
        let mut bytes = std::fs::read(file).unwrap();
        if truncate {
            bytes.truncate(at.index(bytes.len() + 1));
        } else if !bytes.is_empty() {
            for (i, b) in &flips {
                let n = bytes.len();
                bytes[i.index(n)] ^= b | 1;
            }
        }
        std::fs::write(file, bytes).unwrap();
        let uri = format!("/load/docs?path={}&overwrite=true", store.display());
        rt.block_on(check_rag_answer(&app, "POST", &uri, Vec::new()));
        // Still serving.
        rt.block_on(check_rag_answer(&app, "GET", "/indexes", Vec::new()));
    }
}
