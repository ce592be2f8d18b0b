//! One streamed request against an OpenAI-compatible server, timed the way
//! vLLM's client times it: TTFT at the first chunk carrying text, one ITL per
//! later text chunk, E2E at the end of the stream; token counts from the
//! `include_usage` chunk when the server sends one.

use std::time::Instant;

use eventsource_stream::Eventsource;
use futures::StreamExt;
use serde_json::{json, Map, Value};

use super::datasets::SampleRequest;

/// Which OpenAI route to call.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Endpoint {
    Completions,
    Chat,
}

impl Endpoint {
    pub fn path(self) -> &'static str {
        match self {
            Self::Completions => "/v1/completions",
            Self::Chat => "/v1/chat/completions",
        }
    }
}

/// What every request shares.
#[derive(Debug, Clone)]
pub struct ClientConfig {
    pub base_url: String,
    pub model: String,
    pub endpoint: Endpoint,
    pub ignore_eos: bool,
    pub temperature: f64,
    pub api_key: Option<String>,
}

/// The measured outcome of one request (times in seconds).
#[derive(Debug, Clone, Default)]
pub struct RequestOutput {
    pub success: bool,
    pub error: String,
    /// Seconds after the benchmark started that the request was sent.
    pub start_time: f64,
    pub ttft: f64,
    pub itl: Vec<f64>,
    pub latency: f64,
    /// From `usage.completion_tokens` when present, else text chunks seen.
    pub output_tokens: usize,
    /// From `usage.prompt_tokens` when present, else the dataset's count.
    pub prompt_tokens: usize,
    pub generated_text: String,
    pub class: &'static str,
}

/// The JSON body for `req` on `cfg.endpoint`.
pub fn request_body(cfg: &ClientConfig, req: &SampleRequest) -> Value {
    let mut body = Map::new();
    body.insert("model".into(), json!(cfg.model));
    match cfg.endpoint {
        Endpoint::Completions => {
            body.insert("prompt".into(), json!(req.prompt));
            body.insert("max_tokens".into(), json!(req.output_len));
        }
        Endpoint::Chat => {
            body.insert(
                "messages".into(),
                json!([{"role": "user", "content": req.prompt}]),
            );
            body.insert("max_completion_tokens".into(), json!(req.output_len));
        }
    }
    body.insert("temperature".into(), json!(cfg.temperature));
    body.insert("stream".into(), json!(true));
    body.insert("stream_options".into(), json!({"include_usage": true}));
    if cfg.ignore_eos {
        body.insert("ignore_eos".into(), json!(true));
    }
    for (k, v) in &req.extra_body {
        body.insert(k.clone(), v.clone());
    }
    Value::Object(body)
}

/// Send `req` and time its stream. Never panics and never returns early
/// without a verdict: transport, HTTP and in-stream errors become
/// `success = false` with the reason in `error`.
pub async fn send(
    http: &reqwest::Client,
    cfg: &ClientConfig,
    req: &SampleRequest,
    bench_start: Instant,
) -> RequestOutput {
    let mut out = RequestOutput {
        prompt_tokens: req.prompt_len,
        class: req.class,
        ..Default::default()
    };
    let url = format!(
        "{}{}",
        cfg.base_url.trim_end_matches('/'),
        cfg.endpoint.path()
    );
    let mut builder = http.post(&url).json(&request_body(cfg, req));
    if let Some(key) = &cfg.api_key {
        builder = builder.bearer_auth(key);
    }
    let sent = Instant::now();
    out.start_time = sent.duration_since(bench_start).as_secs_f64();
    match stream_into(builder, sent, &mut out).await {
        Ok(()) if out.ttft > 0.0 => out.success = true,
        Ok(()) => out.error = "the stream ended without any generated text".into(),
        Err(e) => out.error = e,
    }
    out.latency = sent.elapsed().as_secs_f64();
    out
}

async fn stream_into(
    builder: reqwest::RequestBuilder,
    sent: Instant,
    out: &mut RequestOutput,
) -> Result<(), String> {
    let resp = builder
        .send()
        .await
        .map_err(|e| format!("request failed: {e}"))?;
    let status = resp.status();
    if !status.is_success() {
        let body = resp.text().await.unwrap_or_default();
        return Err(format!("HTTP {status}: {}", body.trim()));
    }
    let mut events = resp.bytes_stream().eventsource();
    let mut last = sent;
    let mut chunks_with_text = 0usize;
    let mut usage_tokens = None;
    while let Some(event) = events.next().await {
        let event = event.map_err(|e| format!("broken event stream: {e}"))?;
        let now = Instant::now();
        let data = event.data.trim();
        if data == "[DONE]" {
            break;
        }
        if data.is_empty() {
            continue;
        }
        let chunk: Value =
            serde_json::from_str(data).map_err(|e| format!("bad SSE JSON `{data}`: {e}"))?;
        if let Some(err) = chunk.get("error") {
            return Err(format!("server error in stream: {err}"));
        }
        if let Some(usage) = chunk.get("usage").filter(|u| !u.is_null()) {
            if let Some(n) = usage.get("completion_tokens").and_then(Value::as_u64) {
                usage_tokens = Some(n as usize);
            }
            if let Some(n) = usage.get("prompt_tokens").and_then(Value::as_u64) {
                out.prompt_tokens = n as usize;
            }
        }
        let text = chunk_text(&chunk);
        if text.is_empty() {
            continue;
        }
        if chunks_with_text == 0 {
            out.ttft = now.duration_since(sent).as_secs_f64();
        } else {
            out.itl.push(now.duration_since(last).as_secs_f64());
        }
        last = now;
        chunks_with_text += 1;
        out.generated_text.push_str(text);
    }
    out.output_tokens = usage_tokens.unwrap_or(chunks_with_text);
    Ok(())
}

/// The generated text of a completions or chat chunk ("" for none).
fn chunk_text(chunk: &Value) -> &str {
    let Some(choice) = chunk.get("choices").and_then(|c| c.get(0)) else {
        return "";
    };
    choice
        .get("text")
        .or_else(|| choice.get("delta").and_then(|d| d.get("content")))
        .or_else(|| choice.get("delta").and_then(|d| d.get("reasoning_content")))
        .and_then(Value::as_str)
        .unwrap_or("")
}
