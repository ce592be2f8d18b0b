//! What both remote embedders share: the HTTP client, the startup probe that
//! learns the vector size, the token estimate, and normalizing what comes back.

use std::future::Future;
use std::time::Duration;

use super::EmbedError;

/// What remote embedders report as their length limit: the service's own is
/// unknown and it truncates by itself; tandem sends texts whole.
pub const REMOTE_MAX_SEQ_LENGTH: usize = 8192;

/// Per-request limit: a remote service that hangs must not hang ingestion.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(60);

pub fn client(url: &str) -> Result<reqwest::Client, EmbedError> {
    reqwest::Client::builder()
        .timeout(REQUEST_TIMEOUT)
        .build()
        .map_err(|e| remote_err(url, format!("cannot build an HTTP client: {e}")))
}

pub fn remote_err(url: &str, message: impl Into<String>) -> EmbedError {
    EmbedError::Remote {
        url: url.to_string(),
        message: message.into(),
    }
}

/// Every vector of one service must have the dimension it first answered.
pub fn check_dimension(
    url: &str,
    vectors: &[Vec<f32>],
    dimension: usize,
) -> Result<(), EmbedError> {
    match vectors.iter().find(|v| v.len() != dimension) {
        Some(v) => Err(remote_err(
            url,
            format!("answered a {}-dim vector, {dimension} before", v.len()),
        )),
        None => Ok(()),
    }
}

/// Checks the URL is http(s) before anything is sent to it.
pub fn check_url(url: &str) -> Result<(), EmbedError> {
    match reqwest::Url::parse(url) {
        Ok(u) if u.scheme() == "http" || u.scheme() == "https" => Ok(()),
        Ok(u) => Err(EmbedError::Config(format!(
            "--remote-embedding-url {url:?} has scheme {:?}; use http:// or https://",
            u.scheme()
        ))),
        Err(e) => Err(EmbedError::Config(format!(
            "--remote-embedding-url {url:?} is not a URL: {e}"
        ))),
    }
}

/// Runs `probe` to completion on a throwaway runtime in its own thread:
/// construction is synchronous and may itself run inside a tokio runtime,
/// where blocking on a nested one would panic.
pub fn block_on_probe<F, T>(probe: F) -> Result<T, EmbedError>
where
    F: Future<Output = Result<T, EmbedError>> + Send + 'static,
    T: Send + 'static,
{
    std::thread::spawn(move || {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| EmbedError::Config(format!("cannot start a probe runtime: {e}")))?
            .block_on(probe)
    })
    .join()
    .unwrap_or_else(|_| {
        Err(EmbedError::Config(
            "the remote embedding probe panicked".into(),
        ))
    })
}

/// Remote embedders have no tokenizer: about four characters per token, the
/// usual rule of thumb for English with BERT/BPE vocabularies.
pub fn estimate_tokens(text: &str) -> usize {
    text.chars().count().div_ceil(4)
}

/// Scales to unit length (the trait promises normalized vectors; remote
/// services may or may not normalize).
pub fn normalized(mut v: Vec<f32>) -> Vec<f32> {
    let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt();
    if norm > 0.0 {
        v.iter_mut().for_each(|x| *x /= norm);
    }
    v
}

/// Bearer auth when a token is configured.
pub fn with_token(req: reqwest::RequestBuilder, token: Option<&str>) -> reqwest::RequestBuilder {
    match token {
        Some(t) => req.bearer_auth(t),
        None => req,
    }
}

/// The body of a non-2xx answer, shortened, for the error message.
pub async fn failure(url: &str, resp: reqwest::Response) -> EmbedError {
    let status = resp.status();
    let body = resp.text().await.unwrap_or_default();
    let body: String = body.chars().take(300).collect();
    remote_err(url, format!("answered HTTP {status}: {body}"))
}
