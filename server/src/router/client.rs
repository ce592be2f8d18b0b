//! HTTP calls from the router to a worker's internal API.

use std::time::Duration;

use futures::stream::{BoxStream, StreamExt};
use serde::de::DeserializeOwned;
use tandem_engine::serving::ServingRequest;

use crate::worker::wire::{
    DecodeRequest, KvEventLine, PrefillResponse, ReleaseRequest, StreamLine, WireError,
    WorkerStatus, TOKEN_HEADER,
};

/// Why a call to a worker failed, which decides whether to retry elsewhere.
#[derive(Debug, thiserror::Error)]
pub enum CallError {
    /// Connection refused/reset, timeout, 5xx: the worker is unusable now;
    /// another worker may do.
    #[error("worker {url} unreachable or failing: {message}")]
    Unavailable { url: String, message: String },
    /// The worker refused the request itself (4xx): retrying will not help.
    #[error("{}", .0.message)]
    Refused(WireError),
}

#[derive(Clone)]
pub struct WorkerClient {
    http: reqwest::Client,
    token: Option<String>,
}

impl WorkerClient {
    pub fn new(token: Option<String>) -> Self {
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(2))
            .tcp_nodelay(true)
            .pool_idle_timeout(Duration::from_secs(30))
            .build()
            .expect("building the HTTP client");
        WorkerClient { http, token }
    }

    fn post(&self, url: &str, path: &str) -> reqwest::RequestBuilder {
        self.with_token(self.http.post(format!("{url}{path}")))
    }

    fn with_token(&self, rb: reqwest::RequestBuilder) -> reqwest::RequestBuilder {
        match &self.token {
            Some(t) => rb.header(TOKEN_HEADER, t),
            None => rb,
        }
    }

    async fn send(url: &str, rb: reqwest::RequestBuilder) -> Result<reqwest::Response, CallError> {
        let unavailable = |message: String| CallError::Unavailable {
            url: url.to_string(),
            message,
        };
        let resp = rb.send().await.map_err(|e| unavailable(e.to_string()))?;
        let status = resp.status();
        if status.is_success() {
            return Ok(resp);
        }
        let body = resp.text().await.unwrap_or_default();
        match serde_json::from_str::<WireError>(&body) {
            Ok(e) if status.is_client_error() && status.as_u16() != 401 => {
                Err(CallError::Refused(e))
            }
            Ok(e) => Err(unavailable(format!("{status}: {}", e.message))),
            Err(_) => Err(unavailable(format!("{status}: {body}"))),
        }
    }

    pub async fn status(&self, url: &str, timeout: Duration) -> Result<WorkerStatus, CallError> {
        let rb = self
            .with_token(self.http.get(format!("{url}/internal/status")))
            .timeout(timeout);
        let resp = Self::send(url, rb).await?;
        json_reply(url, resp, "status").await
    }

    pub async fn prefill(
        &self,
        url: &str,
        req: &ServingRequest,
    ) -> Result<PrefillResponse, CallError> {
        let resp = Self::send(url, self.post(url, "/internal/prefill").json(req)).await?;
        json_reply(url, resp, "prefill").await
    }

    pub async fn decode(
        &self,
        url: &str,
        req: &DecodeRequest,
    ) -> Result<BoxStream<'static, Result<StreamLine, CallError>>, CallError> {
        let resp = Self::send(url, self.post(url, "/internal/decode").json(req)).await?;
        Ok(ndjson_lines(url, resp))
    }

    pub async fn generate(
        &self,
        url: &str,
        req: &ServingRequest,
    ) -> Result<BoxStream<'static, Result<StreamLine, CallError>>, CallError> {
        let resp = Self::send(url, self.post(url, "/internal/generate").json(req)).await?;
        Ok(ndjson_lines(url, resp))
    }

    pub async fn release(&self, url: &str, lease: u64) -> Result<(), CallError> {
        let rb = self
            .post(url, "/internal/release")
            .json(&ReleaseRequest { lease })
            .timeout(Duration::from_secs(2));
        Self::send(url, rb).await.map(|_| ())
    }

    pub async fn kv_events(
        &self,
        url: &str,
    ) -> Result<BoxStream<'static, Result<KvEventLine, CallError>>, CallError> {
        let rb = self.with_token(self.http.get(format!("{url}/internal/kv-events")));
        let resp = Self::send(url, rb).await?;
        Ok(ndjson_lines(url, resp))
    }
}

/// A whole JSON reply; one that does not parse makes the worker unusable.
async fn json_reply<T: DeserializeOwned>(
    url: &str,
    resp: reqwest::Response,
    what: &str,
) -> Result<T, CallError> {
    resp.json().await.map_err(|e| CallError::Unavailable {
        url: url.into(),
        message: format!("bad {what} reply: {e}"),
    })
}

/// Splits a streamed body into JSON lines.
fn ndjson_lines<T: DeserializeOwned + Send + 'static>(
    url: &str,
    resp: reqwest::Response,
) -> BoxStream<'static, Result<T, CallError>> {
    let url = url.to_string();
    let bytes = resp.bytes_stream();
    async_stream::stream! {
        let mut buf: Vec<u8> = Vec::new();
        futures::pin_mut!(bytes);
        while let Some(chunk) = bytes.next().await {
            let chunk = match chunk {
                Ok(c) => c,
                Err(e) => {
                    yield Err(CallError::Unavailable { url: url.clone(), message: e.to_string() });
                    return;
                }
            };
            buf.extend_from_slice(&chunk);
            while let Some(pos) = buf.iter().position(|&b| b == b'\n') {
                let line: Vec<u8> = buf.drain(..=pos).collect();
                match serde_json::from_slice::<T>(&line[..pos]) {
                    Ok(v) => yield Ok(v),
                    Err(e) => {
                        yield Err(CallError::Unavailable { url: url.clone(), message: format!("bad stream line: {e}") });
                        return;
                    }
                }
            }
        }
    }
    .boxed()
}
