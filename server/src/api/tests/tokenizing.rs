//! Tokenizing runs on the blocking pool: a huge prompt does not stall the
//! server's other connections.

use std::time::{Duration, Instant};

use serde_json::{json, Value};

use super::*;

/// About 100k tokens of the test tokenizer.
fn huge_prompt(tok: &Tokenizer) -> String {
    const PHRASE: &str = "the engine splits documents into chunks and stores their vectors. ";
    let per_phrase = tok.encode(PHRASE, false).unwrap().len();
    PHRASE.repeat(100_000 / per_phrase)
}

/// One runtime thread, as a loaded server has none to spare: a handler
/// that tokenized on it would hold `/health` up for the whole prompt.
#[tokio::test(flavor = "current_thread")]
async fn health_answers_while_a_huge_prompt_is_tokenized() {
    let state = test_state(64);
    let prompt = huge_prompt(&state.model.tokenizer);
    let app = router(state);
    let mut prompt_tokens = 0;
    for (path, body) in [
        ("/tokenize", json!({ "prompt": prompt })),
        ("/v1/completions", json!({ "prompt": prompt })),
        (
            "/v1/chat/completions",
            json!({ "messages": [{"role": "user", "content": prompt}] }),
        ),
    ] {
        let big = tokio::spawn({
            let app = app.clone();
            async move { text(send(&app, "POST", path, Some(body), None).await).await }
        });
        // The big request runs until its first wait (this thread has no
        // other): parsed, its tokenizing handed to the blocking pool.
        tokio::task::yield_now().await;
        assert!(
            !big.is_finished(),
            "{path} tokenized its prompt on the runtime thread"
        );
        let start = Instant::now();
        let health = send(&app, "GET", "/health", None, None).await;
        let waited = start.elapsed();
        assert_eq!(health.status(), 200);
        assert!(
            waited < Duration::from_millis(50),
            "/health took {waited:?} while {path} was tokenizing"
        );
        let answer: Value = serde_json::from_str(&big.await.unwrap()).unwrap();
        match path {
            "/tokenize" => {
                prompt_tokens = answer["count"].as_u64().unwrap();
                assert!(prompt_tokens > 90_000, "{prompt_tokens} tokens");
            }
            // Far over the test model's 64-token window: refused, once tokenized.
            _ => {
                let e = &answer["error"];
                assert_eq!(e["code"], "context_length_exceeded", "{answer}");
                let message = e["message"].as_str().unwrap();
                if path == "/v1/completions" {
                    let counted = format!("({prompt_tokens} in the prompt");
                    assert!(message.contains(&counted), "{message}");
                }
            }
        }
    }
}
