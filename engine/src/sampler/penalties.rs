//! Repetition, frequency and presence penalties, applied in place in vLLM's
//! order: repetition first, then frequency, then presence.

use std::collections::HashMap;

use super::SamplingParams;

/// Penalises `logits` for the tokens already seen. Token ids outside the row
/// (tokenizer ids past the model's vocab) are ignored.
///
/// `seen` is reusable scratch for a bitset over the vocab, so that a token that
/// occurs many times in the prompt is penalised once, without sorting or
/// hashing the prompt each step.
pub(crate) fn apply_penalties(
    logits: &mut [f32],
    params: &SamplingParams,
    prompt_tokens: &[u32],
    output_tokens: &[u32],
    output_counts: &HashMap<u32, u32>,
    seen: &mut Vec<u64>,
) {
    let vocab = logits.len();
    let rep = params.repetition_penalty;
    if rep != 1.0 {
        seen.clear();
        seen.resize(vocab.div_ceil(64), 0);
        for &token in prompt_tokens.iter().chain(output_tokens) {
            let i = token as usize;
            if i >= vocab {
                continue;
            }
            let (word, bit) = (i / 64, 1u64 << (i % 64));
            if seen[word] & bit != 0 {
                continue;
            }
            seen[word] |= bit;
            let l = &mut logits[i];
            *l = if *l > 0.0 { *l / rep } else { *l * rep };
        }
    }
    let (freq, presence) = (params.frequency_penalty, params.presence_penalty);
    if freq != 0.0 || presence != 0.0 {
        for (&token, &count) in output_counts {
            if let Some(l) = logits.get_mut(token as usize) {
                *l -= freq * count as f32 + presence;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn counts(tokens: &[u32]) -> HashMap<u32, u32> {
        let mut c = HashMap::new();
        for &t in tokens {
            *c.entry(t).or_insert(0) += 1;
        }
        c
    }

    #[test]
    fn repetition_divides_positive_and_multiplies_negative_once_per_token() {
        let params = SamplingParams {
            repetition_penalty: 2.0,
            ..Default::default()
        };
        let mut logits = vec![4.0, -1.0, 3.0, 0.0, 1.0];
        // Token 0 repeats in prompt and output; 9 is out of the vocab.
        let (prompt, output) = ([0, 0, 1, 9], [0, 3]);
        let mut seen = Vec::new();
        apply_penalties(
            &mut logits,
            &params,
            &prompt,
            &output,
            &counts(&output),
            &mut seen,
        );
        assert_eq!(logits, vec![2.0, -2.0, 3.0, 0.0, 1.0]);
    }

    #[test]
    fn frequency_scales_with_count_and_presence_does_not() {
        let output = [1, 1, 1, 2];
        let freq = SamplingParams {
            frequency_penalty: 0.5,
            ..Default::default()
        };
        let mut logits = vec![1.0; 4];
        apply_penalties(
            &mut logits,
            &freq,
            &[0],
            &output,
            &counts(&output),
            &mut Vec::new(),
        );
        assert_eq!(logits, vec![1.0, -0.5, 0.5, 1.0]);

        let presence = SamplingParams {
            presence_penalty: 0.5,
            ..Default::default()
        };
        let mut logits = vec![1.0; 4];
        apply_penalties(
            &mut logits,
            &presence,
            &[0],
            &output,
            &counts(&output),
            &mut Vec::new(),
        );
        assert_eq!(logits, vec![1.0, 0.5, 0.5, 1.0]);
    }

    #[test]
    fn penalties_compose_in_vllm_order() {
        // Repetition on prompt+output, then frequency and presence on output only.
        let params = SamplingParams {
            repetition_penalty: 2.0,
            frequency_penalty: 1.0,
            presence_penalty: 0.25,
            ..Default::default()
        };
        let output = [2, 2];
        let mut logits = vec![4.0, 4.0, 4.0];
        apply_penalties(
            &mut logits,
            &params,
            &[1],
            &output,
            &counts(&output),
            &mut Vec::new(),
        );
        assert_eq!(logits, vec![4.0, 2.0, 4.0 / 2.0 - 2.0 - 0.25]);
    }

    #[test]
    fn negative_penalties_reward_repeats() {
        let params = SamplingParams {
            presence_penalty: -1.0,
            ..Default::default()
        };
        let mut logits = vec![0.0, 0.0];
        apply_penalties(
            &mut logits,
            &params,
            &[],
            &[1],
            &counts(&[1]),
            &mut Vec::new(),
        );
        assert_eq!(logits, vec![0.0, 1.0]);
    }
}
