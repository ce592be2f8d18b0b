//! Token-exact prompts. The benchmark counts tokens with a local
//! `tokenizer.json` (`--tokenizer DIR`), as vLLM's client does: it works for
//! any server, costs no requests during the run, and is the same tokenizer
//! the server loads when both read the same model directory.

use std::path::Path;

use rand::Rng;
use tokenizers::Tokenizer;

use super::DatasetError;

/// A tokenizer plus the ids it may draw random prompts from (no special
/// or added tokens, so a prompt never contains e.g. an end-of-turn marker).
pub struct PromptTokenizer {
    tokenizer: Tokenizer,
    plain_ids: Vec<u32>,
}

impl PromptTokenizer {
    /// Load `DIR/tokenizer.json` (or a path to the file itself).
    pub fn load(path: &Path) -> Result<Self, DatasetError> {
        let file = if path.is_dir() {
            path.join("tokenizer.json")
        } else {
            path.to_path_buf()
        };
        let tokenizer = Tokenizer::from_file(&file).map_err(|e| DatasetError::Tokenizer {
            path: file.display().to_string(),
            message: e.to_string(),
        })?;
        let added: std::collections::HashSet<u32> = tokenizer
            .get_added_tokens_decoder()
            .keys()
            .copied()
            .collect();
        let plain_ids = (0..tokenizer.get_vocab_size(true) as u32)
            .filter(|id| !added.contains(id))
            .collect();
        Ok(Self {
            tokenizer,
            plain_ids,
        })
    }

    /// Number of tokens in `text` (no special tokens added).
    pub fn count(&self, text: &str) -> Result<usize, DatasetError> {
        Ok(self.encode(text)?.len())
    }

    fn encode(&self, text: &str) -> Result<Vec<u32>, DatasetError> {
        self.tokenizer
            .encode(text, false)
            .map(|e| e.get_ids().to_vec())
            .map_err(|e| DatasetError::Encode(e.to_string()))
    }

    fn decode(&self, ids: &[u32]) -> Result<String, DatasetError> {
        self.tokenizer
            .decode(ids, true)
            .map_err(|e| DatasetError::Encode(e.to_string()))
    }

    /// Text that re-encodes to exactly `len` tokens where the tokenizer allows
    /// it: random ids are decoded, re-encoded, then cut or topped up until the
    /// round trip is stable. Returns the text and its true token count.
    pub fn random_text(
        &self,
        rng: &mut impl Rng,
        len: usize,
    ) -> Result<(String, usize), DatasetError> {
        let mut ids: Vec<u32> = (0..len).map(|_| self.random_id(rng)).collect();
        let mut text = self.decode(&ids)?;
        for _ in 0..16 {
            let round_trip = self.encode(&text)?;
            if round_trip.len() == len {
                return Ok((text, len));
            }
            ids = round_trip;
            ids.truncate(len);
            while ids.len() < len {
                ids.push(self.random_id(rng));
            }
            text = self.decode(&ids)?;
        }
        let actual = self.count(&text)?;
        Ok((text, actual))
    }

    fn random_id(&self, rng: &mut impl Rng) -> u32 {
        self.plain_ids[rng.random_range(0..self.plain_ids.len())]
    }
}
