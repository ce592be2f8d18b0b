//! SSE framing and response shapes.

use axum::http::header;
use serde_json::{json, Value};

use super::*;

#[tokio::test]
async fn chat_stream_role_first_finish_last_usage_then_done() {
    let (app, _) = app(Mode::Script, 16, None);
    let body = json!({"model": "m", "messages": [{"role": "user", "content": "hi"}],
        "max_tokens": 3, "n": 2, "stream": true, "stream_options": {"include_usage": true}});
    let resp = send(&app, "POST", "/v1/chat/completions", Some(body), None).await;
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()[header::CONTENT_TYPE], "text/event-stream");
    let events = sse_payloads(&text(resp).await);
    assert_eq!(events.last().unwrap(), "[DONE]");
    let chunks: Vec<Value> = events[..events.len() - 1]
        .iter()
        .map(|e| serde_json::from_str(e).unwrap())
        .collect();
    let id = chunks[0]["id"].as_str().unwrap();
    assert!(id.starts_with("chatcmpl-"));
    assert!(chunks
        .iter()
        .all(|c| c["id"] == id && c["object"] == "chat.completion.chunk"));
    for (i, c) in chunks[..2].iter().enumerate() {
        assert_eq!(c["choices"][0]["index"], i);
        assert_eq!(
            c["choices"][0]["delta"],
            json!({"role": "assistant", "content": ""})
        );
    }
    let usage = chunks.last().unwrap();
    assert_eq!(usage["choices"], json!([]));
    assert_eq!(usage["usage"]["completion_tokens"], 6);
    assert_eq!(
        usage["usage"]["total_tokens"],
        usage["usage"]["prompt_tokens"].as_u64().unwrap() + 6
    );
    for index in 0..2 {
        let mine: Vec<&Value> = chunks[2..chunks.len() - 1]
            .iter()
            .map(|c| &c["choices"][0])
            .filter(|c| c["index"] == index)
            .collect();
        let text: String = mine
            .iter()
            .map(|c| c["delta"]["content"].as_str().unwrap())
            .collect();
        assert_eq!(text, "t0 t1 t2 ");
        assert!(mine.iter().all(|c| c["delta"].get("role").is_none()));
        let (last, rest) = mine.split_last().unwrap();
        assert_eq!(last["finish_reason"], "length");
        assert!(rest.iter().all(|c| c["finish_reason"].is_null()));
    }
}

#[tokio::test]
async fn completion_stream_without_usage_ends_in_done() {
    let (app, _) = app(Mode::Script, 16, None);
    let body = json!({"prompt": ["a", "b"], "max_tokens": 2, "stream": true, "echo": true});
    let events =
        sse_payloads(&text(send(&app, "POST", "/v1/completions", Some(body), None).await).await);
    assert_eq!(events.last().unwrap(), "[DONE]");
    let chunks: Vec<Value> = events[..events.len() - 1]
        .iter()
        .map(|e| serde_json::from_str(e).unwrap())
        .collect();
    assert_eq!(
        chunks.len(),
        4,
        "two tokens for each of two prompts, no usage chunk"
    );
    assert!(chunks
        .iter()
        .all(|c| c["object"] == "text_completion" && c.get("usage").is_none()));
    let first_of = |i: usize| {
        chunks
            .iter()
            .find(|c| c["choices"][0]["index"] == i)
            .unwrap()
    };
    assert_eq!(
        first_of(0)["choices"][0]["text"],
        "at0 ",
        "echo prepends the prompt"
    );
    assert_eq!(first_of(1)["choices"][0]["text"], "bt0 ");
}

#[tokio::test]
async fn completion_response_shape() {
    let (app, _) = app(Mode::Script, 16, None);
    let body = json!({"model": "alias", "prompt": "x", "max_tokens": 2, "logprobs": 1});
    let resp = send(&app, "POST", "/v1/completions", Some(body), None).await;
    assert_eq!(resp.status(), 200);
    let v: Value = serde_json::from_str(&text(resp).await).unwrap();
    assert!(v["id"].as_str().unwrap().starts_with("cmpl-"));
    assert_eq!(v["object"], "text_completion");
    assert_eq!(v["model"], "m", "responses report the first served name");
    let c = &v["choices"][0];
    assert_eq!(c["text"], "t0 t1 ");
    assert_eq!(c["finish_reason"], "length");
    assert!(c["stop_reason"].is_null());
    let lp = &c["logprobs"];
    assert_eq!(lp["token_logprobs"], json!([-0.5, -0.5]));
    assert_eq!(lp["tokens"].as_array().unwrap().len(), 2);
    assert_eq!(lp["text_offset"][0], 0);
    assert_eq!(v["usage"]["completion_tokens"], 2);
    assert_eq!(v["usage"]["prompt_tokens_details"]["cached_tokens"], 0);
}
