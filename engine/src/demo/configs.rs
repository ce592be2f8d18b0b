//! The JSON side files of the model directory, written in the transformers
//! 4.x dialect most published Llama checkpoints use.

use serde_json::{json, Value};

use super::spec::DemoSpec;
use super::tokenizer::{SpecialIds, BOS, EOT, IM_END, IM_START, SPECIAL_TOKENS};
use super::DemoSize;

/// Said in config.json and README.md, so nobody mistakes this for a model.
pub const RANDOM_WEIGHTS_NOTE: &str =
    "random weights: output is gibberish, for tests and demos only";

/// transformers version the files imitate (the 4.x config dialect).
const TRANSFORMERS_VERSION: &str = "4.46.0";

/// ChatML. Starts with BOS because chat front ends (vLLM, `apply_chat_template`)
/// tokenize the rendered prompt without adding special tokens. Message content
/// may be a string or an OpenAI-style list of `{"type": "text"}` parts.
pub const CHAT_TEMPLATE: &str = concat!(
    "{{- bos_token }}",
    "{%- for message in messages %}",
    "{{- '<|im_start|>' + message['role'] + '\\n' }}",
    "{%- if message['content'] is string %}",
    "{{- message['content'] }}",
    "{%- else %}",
    "{%- for part in message['content'] %}",
    "{%- if part['type'] == 'text' %}{{- part['text'] }}{%- endif %}",
    "{%- endfor %}",
    "{%- endif %}",
    "{{- '<|im_end|>\\n' }}",
    "{%- endfor %}",
    "{%- if add_generation_prompt %}",
    "{{- '<|im_start|>assistant\\n' }}",
    "{%- endif %}",
);

/// `config.json`: `LlamaForCausalLM` with tied embeddings.
pub fn config_json(spec: &DemoSpec, ids: &SpecialIds) -> Value {
    json!({
        "architectures": ["LlamaForCausalLM"],
        "attention_bias": false,
        "attention_dropout": 0.0,
        "bos_token_id": ids.bos,
        "eos_token_id": [ids.im_end, ids.end_of_text],
        "head_dim": spec.head_dim,
        "hidden_act": "silu",
        "hidden_size": spec.hidden_size,
        "initializer_range": DemoSpec::EMBEDDING_STD,
        "intermediate_size": spec.intermediate_size,
        "max_position_embeddings": spec.max_position_embeddings,
        "mlp_bias": false,
        "model_type": "llama",
        "num_attention_heads": spec.num_attention_heads,
        "num_hidden_layers": spec.num_hidden_layers,
        "num_key_value_heads": spec.num_key_value_heads,
        "pretraining_tp": 1,
        "rms_norm_eps": spec.rms_norm_eps,
        "rope_scaling": null,
        "rope_theta": spec.rope_theta,
        "tandem_note": RANDOM_WEIGHTS_NOTE,
        "tie_word_embeddings": true,
        "torch_dtype": spec.dtype.torch_name(),
        "transformers_version": TRANSFORMERS_VERSION,
        "use_cache": true,
        "vocab_size": spec.vocab_size,
    })
}

/// `generation_config.json`: stop on either end token; mild sampling defaults.
pub fn generation_config_json(ids: &SpecialIds) -> Value {
    json!({
        "bos_token_id": ids.bos,
        "do_sample": true,
        "eos_token_id": [ids.im_end, ids.end_of_text],
        "temperature": 0.7,
        "top_p": 0.9,
        "transformers_version": TRANSFORMERS_VERSION,
    })
}

/// `tokenizer_config.json`. `eos_token` is `<|im_end|>`: vLLM and
/// transformers stop chat turns on the tokenizer's EOS, and a ChatML turn ends
/// with `<|im_end|>`. `<|end_of_text|>` is the pad token and the second stop id
/// in generation_config.json (plain completions).
pub fn tokenizer_config_json(spec: &DemoSpec, ids: &SpecialIds) -> Value {
    let id_of = |t: &str| match t {
        BOS => ids.bos,
        EOT => ids.end_of_text,
        IM_START => ids.im_start,
        _ => ids.im_end,
    };
    let added: serde_json::Map<String, Value> = SPECIAL_TOKENS
        .iter()
        .map(|t| {
            let entry = json!({
                "content": t,
                "lstrip": false,
                "normalized": false,
                "rstrip": false,
                "single_word": false,
                "special": true,
            });
            (id_of(t).to_string(), entry)
        })
        .collect();
    json!({
        "add_bos_token": true,
        "add_eos_token": false,
        "added_tokens_decoder": added,
        "bos_token": BOS,
        "chat_template": CHAT_TEMPLATE,
        "clean_up_tokenization_spaces": false,
        "eos_token": IM_END,
        "model_input_names": ["input_ids", "attention_mask"],
        "model_max_length": spec.max_position_embeddings,
        "pad_token": EOT,
        "tokenizer_class": "PreTrainedTokenizerFast",
    })
}

/// README.md of the generated directory.
pub fn readme(size: DemoSize, spec: &DemoSpec, seed: u64) -> String {
    format!(
        "# tandem demo model ({size})\n\n\
         **These weights are random.** The model produces gibberish. It exists so \
         tandem's tests and demos run without a network or a real checkpoint; do \
         not use it for anything else.\n\n\
         - architecture: Llama (`LlamaForCausalLM`), {layers} layers, hidden {hidden}, \
         {heads} heads / {kv} KV heads (head_dim {hd}), MLP {inter}, tied embeddings\n\
         - parameters: {params}\n\
         - weights: {dtype}, normal samples from a ChaCha RNG, seed {seed}\n\
         - tokenizer: byte-level BPE, {vocab} ids, trained when this directory was \
         written on a small English corpus shipped with tandem; ChatML chat template\n\n\
         Regenerate with `tandem demo-model --out DIR --size {size}`.\n",
        layers = spec.num_hidden_layers,
        hidden = spec.hidden_size,
        heads = spec.num_attention_heads,
        kv = spec.num_key_value_heads,
        hd = spec.head_dim,
        inter = spec.intermediate_size,
        params = spec.parameter_count(),
        dtype = spec.dtype.torch_name(),
        vocab = spec.vocab_size,
    )
}
