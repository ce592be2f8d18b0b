//! `--dataset sharegpt`: real conversations from a ShareGPT-format JSON file
//! (a list of `{"conversations": [{"from", "value"}, …]}`). The first human
//! turn is the prompt; the reply's token count is the output length unless
//! `--output-len` fixes it, as in vLLM.

use std::path::Path;

use rand::seq::SliceRandom;
use rand::Rng;
use serde::Deserialize;

use super::tokens::PromptTokenizer;
use super::{DatasetError, SampleRequest};

#[derive(Deserialize)]
struct Entry {
    #[serde(default)]
    conversations: Vec<Turn>,
}

#[derive(Deserialize)]
struct Turn {
    from: String,
    value: String,
}

/// Prompt/reply pairs from the file, in file order.
pub fn load_pairs(path: &Path) -> Result<Vec<(String, String)>, DatasetError> {
    let name = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|source| DatasetError::Read {
        path: name.clone(),
        source,
    })?;
    let entries: Vec<Entry> =
        serde_json::from_str(&text).map_err(|source| DatasetError::ShareGptFormat {
            path: name.clone(),
            source,
        })?;
    let pairs: Vec<(String, String)> = entries
        .into_iter()
        .filter_map(|e| {
            let ask = e.conversations.iter().position(|t| t.from == "human")?;
            let reply = e.conversations.get(ask + 1)?;
            Some((e.conversations[ask].value.clone(), reply.value.clone()))
        })
        .collect();
    if pairs.is_empty() {
        return Err(DatasetError::Empty { path: name });
    }
    Ok(pairs)
}

/// `num_prompts` requests drawn (shuffled, repeating if the file is short)
/// from the file; too-short replies (< 4 tokens) are skipped like vLLM does.
pub fn build(
    path: &Path,
    num_prompts: usize,
    fixed_output_len: Option<usize>,
    tok: &PromptTokenizer,
    rng: &mut impl Rng,
) -> Result<Vec<SampleRequest>, DatasetError> {
    let mut pairs = load_pairs(path)?;
    pairs.shuffle(rng);
    let mut out = Vec::with_capacity(num_prompts);
    for (prompt, reply) in pairs.iter().cycle().take(num_prompts * 4 + pairs.len()) {
        if out.len() == num_prompts {
            break;
        }
        let reply_len = tok.count(reply)?;
        let output_len = fixed_output_len.unwrap_or(reply_len);
        if output_len < 4 {
            continue;
        }
        let prompt_len = tok.count(prompt)?;
        out.push(SampleRequest::new(prompt.clone(), prompt_len, output_len));
    }
    if out.is_empty() {
        return Err(DatasetError::Empty {
            path: path.display().to_string(),
        });
    }
    Ok(out)
}
