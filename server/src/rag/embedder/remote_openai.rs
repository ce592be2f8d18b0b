//! An OpenAI-compatible `/v1/embeddings` service (OpenAI, vLLM, another
//! tandem): one request per batch, `{"input": [...], "model": ...}`, vectors
//! read back by their `index`.

use std::sync::Arc;

use futures::future::BoxFuture;
use futures::FutureExt;
use serde::Deserialize;

use super::remote::{
    block_on_probe, check_dimension, check_url, client, estimate_tokens, failure, normalized,
    remote_err, with_token, REMOTE_MAX_SEQ_LENGTH,
};
use super::{EmbedError, Embedder};

/// Texts per request: OpenAI accepts up to 2048 inputs per call.
const MAX_INPUTS_PER_REQUEST: usize = 256;

pub struct OpenAiEmbedder {
    inner: Arc<Inner>,
    dimension: usize,
}

struct Inner {
    url: String,
    model: String,
    token: Option<String>,
    client: reqwest::Client,
}

#[derive(Deserialize)]
struct Response {
    data: Vec<Item>,
}

#[derive(Deserialize)]
struct Item {
    index: usize,
    embedding: Vec<f32>,
}

/// The endpoint for a URL given as the full path, a `/v1` base or a host.
pub fn endpoint(url: &str) -> String {
    let trimmed = url.trim_end_matches('/');
    if trimmed.ends_with("/embeddings") {
        trimmed.to_string()
    } else if trimmed.ends_with("/v1") {
        format!("{trimmed}/embeddings")
    } else {
        format!("{trimmed}/v1/embeddings")
    }
}

impl Inner {
    async fn embed_batch(&self, texts: Vec<String>) -> Result<Vec<Vec<f32>>, EmbedError> {
        let n = texts.len();
        let body = serde_json::json!({
            "input": texts,
            "model": self.model,
            "encoding_format": "float",
        });
        let req = self.client.post(&self.url).json(&body);
        let resp = with_token(req, self.token.as_deref())
            .send()
            .await
            .map_err(|e| remote_err(&self.url, format!("request failed: {e}")))?;
        if !resp.status().is_success() {
            return Err(failure(&self.url, resp).await);
        }
        let answer: Response = resp.json().await.map_err(|e| {
            remote_err(&self.url, format!("not an OpenAI embeddings response: {e}"))
        })?;
        let mut out = vec![Vec::new(); n];
        for item in answer.data {
            match out.get_mut(item.index) {
                Some(slot) if slot.is_empty() => *slot = normalized(item.embedding),
                _ => {
                    return Err(remote_err(
                        &self.url,
                        format!("answered a bad or repeated index {}", item.index),
                    ))
                }
            }
        }
        if out.iter().any(Vec::is_empty) {
            return Err(remote_err(
                &self.url,
                format!("answered fewer than {n} vectors"),
            ));
        }
        Ok(out)
    }
}

impl OpenAiEmbedder {
    /// `model` is required: OpenAI-style services pick the model by name.
    /// Embeds a probe sentence to learn the dimension and fail early.
    pub fn new(
        url: &str,
        model: Option<String>,
        token: Option<String>,
    ) -> Result<Self, EmbedError> {
        check_url(url)?;
        let model = model.ok_or_else(|| {
            EmbedError::Config(
                "--remote-embedding-kind openai needs --remote-embedding-model NAME".into(),
            )
        })?;
        let url = endpoint(url);
        let make = |c| Inner {
            url: url.clone(),
            model: model.clone(),
            token: token.clone(),
            client: c,
        };
        let probe = make(client(&url)?);
        let dimension = block_on_probe(async move {
            let v = probe
                .embed_batch(vec!["This is a probe sentence.".into()])
                .await?;
            Ok(v[0].len())
        })?;
        Ok(OpenAiEmbedder {
            inner: Arc::new(make(client(&url)?)),
            dimension,
        })
    }
}

impl Embedder for OpenAiEmbedder {
    fn model_name(&self) -> &str {
        &self.inner.model
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
            let mut out = Vec::with_capacity(texts.len());
            let mut rest = texts;
            while !rest.is_empty() {
                let tail = rest.split_off(rest.len().min(MAX_INPUTS_PER_REQUEST));
                out.extend(
                    inner
                        .embed_batch(std::mem::replace(&mut rest, tail))
                        .await?,
                );
            }
            check_dimension(&inner.url, &out, dimension)?;
            Ok(out)
        }
        .boxed()
    }

    fn count_tokens(&self, text: &str) -> usize {
        estimate_tokens(text)
    }
}
