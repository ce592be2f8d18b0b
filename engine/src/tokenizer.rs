//! The model's tokenizer plus what `tokenizer_config.json` says about it:
//! special tokens, whether to add BOS, and the chat template (inline, or in
//! `chat_template.jinja` as newer transformers saves it).

use serde_json::Value;
use std::path::Path;

use crate::error::{read_json, read_to_string, EngineError, Result};
use crate::model_dir::ModelFiles;

pub struct Tokenizer {
    inner: tokenizers::Tokenizer,
    pub bos_token: Option<String>,
    pub eos_token: Option<String>,
    pub chat_template: Option<String>,
}

/// Special tokens are a plain string or an `AddedToken` object.
fn token_text(v: Option<&Value>) -> Option<String> {
    match v? {
        Value::String(s) => Some(s.clone()),
        Value::Object(o) => o.get("content").and_then(Value::as_str).map(str::to_string),
        _ => None,
    }
}

/// `chat_template` is a string, or a list of named templates ("default" wins).
fn template_text(v: Option<&Value>) -> Option<String> {
    match v? {
        Value::String(s) => Some(s.clone()),
        Value::Array(list) => {
            let named = |want: &str| {
                list.iter().find_map(|t| {
                    (t.get("name")?.as_str()? == want)
                        .then(|| t.get("template")?.as_str().map(str::to_string))
                        .flatten()
                })
            };
            named("default").or_else(|| list.first()?.get("template")?.as_str().map(str::to_string))
        }
        _ => None,
    }
}

impl Tokenizer {
    pub fn load(files: &ModelFiles) -> Result<Self> {
        let inner = Self::load_file(&files.tokenizer)?;
        let cfg: Value = match &files.tokenizer_config {
            Some(p) => read_json(p, "a tokenizer config")?,
            None => Value::Null,
        };
        let mut chat_template = template_text(cfg.get("chat_template"));
        if let Some(p) = &files.chat_template_jinja {
            chat_template = Some(read_to_string(p)?);
        }
        Ok(Tokenizer {
            inner,
            bos_token: token_text(cfg.get("bos_token")),
            eos_token: token_text(cfg.get("eos_token")),
            chat_template,
        })
    }

    /// A tokenizer built in code (e.g. from GGUF metadata).
    pub fn from_parts(
        inner: tokenizers::Tokenizer,
        bos_token: Option<String>,
        eos_token: Option<String>,
        chat_template: Option<String>,
    ) -> Self {
        Tokenizer {
            inner,
            bos_token,
            eos_token,
            chat_template,
        }
    }

    fn load_file(path: &Path) -> Result<tokenizers::Tokenizer> {
        tokenizers::Tokenizer::from_file(path)
            .map_err(|e| EngineError::Tokenizer(format!("{}: {e}", path.display())))
    }

    pub fn vocab_size(&self) -> usize {
        self.inner.get_vocab_size(true)
    }

    pub fn token_to_id(&self, token: &str) -> Option<u32> {
        self.inner.token_to_id(token)
    }

    pub fn id_to_token(&self, id: u32) -> Option<String> {
        self.inner.id_to_token(id)
    }

    /// Encodes `text`; with `add_special_tokens` the tokenizer's own
    /// post-processor decides (e.g. Llama 3 prepends BOS, Qwen adds nothing).
    pub fn encode(&self, text: &str, add_special_tokens: bool) -> Result<Vec<u32>> {
        let enc = self
            .inner
            .encode(text, add_special_tokens)
            .map_err(|e| EngineError::Tokenizer(format!("encoding failed: {e}")))?;
        Ok(enc.get_ids().to_vec())
    }

    pub fn decode(&self, ids: &[u32], skip_special_tokens: bool) -> Result<String> {
        self.inner
            .decode(ids, skip_special_tokens)
            .map_err(|e| EngineError::Tokenizer(format!("decoding failed: {e}")))
    }

    pub fn inner(&self) -> &tokenizers::Tokenizer {
        &self.inner
    }
}
