//! KAITO's remote embedding contract (RAGEngine's `RemoteEmbeddingModel`):
//! `POST url {"inputs": text}` with a Bearer token, one text per request,
//! answered by the vector as a JSON list. Hugging Face text-embeddings-
//! inference answers a one-row list of lists to the same call; both are
//! accepted. Requests for a batch go out concurrently, a few at a time.

use std::sync::Arc;

use futures::future::BoxFuture;
use futures::{FutureExt, StreamExt, TryStreamExt};
use serde::Deserialize;

use super::remote::{
    block_on_probe, check_dimension, check_url, client, estimate_tokens, failure, normalized,
    remote_err, with_token, REMOTE_MAX_SEQ_LENGTH,
};
use super::{EmbedError, Embedder};

/// Requests in flight per `embed` call.
const CONCURRENCY: usize = 8;

/// A KAITO-style remote embedding endpoint.
pub struct KaitoEmbedder {
    inner: Arc<Inner>,
    name: String,
    dimension: usize,
}

struct Inner {
    url: String,
    token: Option<String>,
    client: reqwest::Client,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum Answer {
    Flat(Vec<f32>),
    Nested(Vec<Vec<f32>>),
}

impl Inner {
    async fn embed_one(&self, text: String) -> Result<Vec<f32>, EmbedError> {
        let req = self
            .client
            .post(&self.url)
            .json(&serde_json::json!({ "inputs": text }));
        let resp = with_token(req, self.token.as_deref())
            .send()
            .await
            .map_err(|e| remote_err(&self.url, format!("request failed: {e}")))?;
        if !resp.status().is_success() {
            return Err(failure(&self.url, resp).await);
        }
        let answer: Answer = resp.json().await.map_err(|e| {
            remote_err(
                &self.url,
                format!("expected a JSON list of numbers (or one list of them): {e}"),
            )
        })?;
        let vector = match answer {
            Answer::Flat(v) => v,
            Answer::Nested(mut rows) if rows.len() == 1 => rows.remove(0),
            Answer::Nested(rows) => {
                return Err(remote_err(
                    &self.url,
                    format!("answered {} vectors for one text", rows.len()),
                ))
            }
        };
        if vector.is_empty() {
            return Err(remote_err(&self.url, "answered an empty vector"));
        }
        Ok(normalized(vector))
    }
}

impl KaitoEmbedder {
    /// Connects to `url` and embeds a probe sentence to learn the dimension
    /// (as KAITO does at startup), so a wrong URL or token fails at once.
    pub fn new(
        url: &str,
        model: Option<String>,
        token: Option<String>,
    ) -> Result<Self, EmbedError> {
        check_url(url)?;
        let make = |c| Inner {
            url: url.to_string(),
            token: token.clone(),
            client: c,
        };
        let probe = make(client(url)?);
        let dimension = block_on_probe(async move {
            probe
                .embed_one("This is a probe sentence.".into())
                .await
                .map(|v| v.len())
        })?;
        Ok(KaitoEmbedder {
            inner: Arc::new(make(client(url)?)),
            name: model.unwrap_or_else(|| url.to_string()),
            dimension,
        })
    }
}

impl Embedder for KaitoEmbedder {
    fn model_name(&self) -> &str {
        &self.name
    }

    fn dimension(&self) -> usize {
        self.dimension
    }

    fn max_seq_length(&self) -> usize {
        REMOTE_MAX_SEQ_LENGTH
    }

    fn embed(&self, texts: Vec<String>) -> BoxFuture<'static, Result<Vec<Vec<f32>>, EmbedError>> {
        let inner = self.inner.clone();
        let dimension = self.dimension;
        async move {
            let vectors: Vec<Vec<f32>> = futures::stream::iter(texts)
                .map(|t| {
                    let inner = inner.clone();
                    async move { inner.embed_one(t).await }
                })
                .buffered(CONCURRENCY)
                .try_collect()
                .await?;
            check_dimension(&inner.url, &vectors, dimension)?;
            Ok(vectors)
        }
        .boxed()
    }

    fn count_tokens(&self, text: &str) -> usize {
        estimate_tokens(text)
    }
}
