#!/usr/bin/env python3
"""Generate tandem's HF-transformers oracle fixtures (tiny random models + reference logits).

What it makes (everything under ``tests/fixtures/``, which it deletes and rewrites):

* ``models/<name>/`` -- small random-weight Hugging Face model directories, each with
  ``config.json``, ``generation_config.json``, ``model.safetensors`` (or shards + index),
  ``tokenizer.json``, ``tokenizer_config.json`` (and for one model ``chat_template.jinja``).
  All share one byte-level BPE tokenizer trained here on ``scripts/oracle_corpus.txt``.
  Models: llama (GQA, llama3 rope scaling, untied), llama_tied (MHA, tied),
  qwen2 (qkv bias, GQA 3:1, tied), qwen3 (per-head q/k RMSNorm, explicit head_dim),
  mistral (GQA 4:1, untied), qwen2_bf16 (qwen2 saved in bf16), llama_sharded (llama,
  2 safetensors shards + index), llama_v4 (llama with a hand-written transformers-4.x
  dialect config.json).
* ``oracle/<name>.safetensors`` + ``oracle/<name>.json`` -- for each of 3 prompt cases
  (1 token; a short non-ASCII sentence with BOS; >= 70 tokens):
  ``case{i}.input_ids`` (i64 [prompt_len]), ``case{i}.generated_ids`` (i64 [32], greedy,
  EOS ignored), ``case{i}.logits`` (f32 [prompt_len + 31, vocab]: one full forward over
  prompt + generated[:-1], logits at every position). For qwen2_bf16 additionally
  ``case{i}.logits_bf16`` (bf16 compute over the same tokens, stored as f32) and
  ``case{i}.generated_ids_bf16``. llama_sharded and llama_v4 are the llama model
  byte-for-byte, so their sidecars point at ``llama.safetensors`` (checked here to be
  bitwise identical) instead of duplicating it.
* ``README.md`` -- describes the fixtures.

Size: tests/fixtures/ must stay under 5 MB, hence the small vocab (384), hidden 64/96, MLP 32
and 3 cases; the f32 logits and embeddings dominate.

Everything is deterministic (fixed seeds, single-threaded torch, deterministic
algorithms); re-running on the same library versions reproduces byte-identical files.
Nothing is downloaded: configs are built locally with ``*Config(...)`` and
``AutoModelForCausalLM.from_config``.

How to run (from the repository root):

    /work/.venv-oracle/bin/python scripts/make_oracle_fixtures.py

Needs torch, transformers (5.x), tokenizers, safetensors, numpy. CI does NOT run this
script: the fixtures it writes are committed, and the Rust tests only read them.
Regenerate only on purpose (e.g. a new case or model), and review the diff.
"""

from __future__ import annotations

import copy
import json
import os
import re
import shutil
import sys
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")

import numpy as np  # noqa: E402
import safetensors  # noqa: E402
import tokenizers  # noqa: E402
import torch  # noqa: E402
import transformers  # noqa: E402
from safetensors.torch import save_file  # noqa: E402
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers  # noqa: E402
from transformers import (  # noqa: E402
    AutoModelForCausalLM,
    AutoTokenizer,
    GenerationConfig,
    LlamaConfig,
    MistralConfig,
    PreTrainedTokenizerFast,
    Qwen2Config,
    Qwen3Config,
)

transformers.utils.logging.set_verbosity_error()
transformers.utils.logging.disable_progress_bar()

ROOT = Path(__file__).resolve().parent.parent
CORPUS = ROOT / "scripts" / "oracle_corpus.txt"
FIXTURES = ROOT / "tests" / "fixtures"
MODELS_DIR = FIXTURES / "models"
ORACLE_DIR = FIXTURES / "oracle"

# ----------------------------------------------------------------------------------
# Knobs. The whole of tests/fixtures/ must stay under 5 MB; the oracle logits
# ([rows, vocab] f32 per case) and the embeddings dominate, so vocab is kept small.
# ----------------------------------------------------------------------------------
VOCAB_SIZE = 384  # total, including the 4 special tokens (appended after the BPE vocab)
INTERMEDIATE = 32  # MLP width (narrower than hidden on purpose: size budget)
MIN_DECODE_GAP = 2e-3  # required top1-top2 logit gap at every greedy step (f32), see pick_weights
MIN_DISTINCT = 6  # required distinct tokens among the 32 generated, per case (no 1-token loops)
MAX_SEED_TRIES = 500
NEW_TOKENS = 32
MAX_POS = 512
BASE_SEED = 20240611
ATTN_IMPL = "eager"  # the plain-math reference attention
SHARD_SIZE = "180KB"  # llama_sharded: 2-3 shards

SPECIAL_TOKENS = ["<|begin_of_text|>", "<|end_of_text|>", "<|im_start|>", "<|im_end|>"]
BOS, EOS, IM_START, IM_END = SPECIAL_TOKENS

CHAT_TEMPLATE = (
    "{%- for message in messages %}"
    "{{- '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>\\n' }}"
    "{%- endfor %}"
    "{%- if add_generation_prompt %}{{- '<|im_start|>assistant\\n' }}{%- endif %}"
)
CHAT_MESSAGES = [
    {"role": "system", "content": "You are a terse assistant."},
    {"role": "user", "content": "What does a paged cache do?"},
    {"role": "assistant", "content": "It maps sequences to blocks."},
    {"role": "user", "content": "Merci, café?"},
]

# Prompt cases (3, to fit the size budget). Requirements (asserted): case0 encodes to
# exactly 1 token; case1 starts with <|begin_of_text|> (added by the tokenizer's
# post-processor) and contains multi-byte UTF-8; case2 is >= 70 tokens, i.e. spans several
# 16-token KV blocks even before the 32 generated tokens.
CASES = [
    {"prompt": "The", "add_special_tokens": False, "what": "1-token prompt"},
    {
        "prompt": "The café said 你好世界 🙂",
        "add_special_tokens": True,
        "what": "short sentence; BOS prepended by the tokenizer post-processor; non-ASCII "
        "(accent, CJK, emoji -> merged multi-byte and partial-UTF-8 tokens)",
    },
    {
        "prompt": (
            "When the queue grows long, the engine counts its free blocks, admits the "
            "requests that fit, and asks the rest to wait. Long prompts are cut up."
        ),
        "add_special_tokens": False,
        "what": ">= 70 tokens, spans several 16-token KV blocks",
    },
]


# ----------------------------------------------------------------------------------
# Tokenizer
# ----------------------------------------------------------------------------------
def train_tokenizer() -> Tokenizer:
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=VOCAB_SIZE - len(SPECIAL_TOKENS),
        min_frequency=2,
        show_progress=False,
        special_tokens=[],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    tok.train([str(CORPUS)], trainer)
    # Specials go at the end of the vocabulary, as in Llama 3 / Qwen.
    tok.add_special_tokens(SPECIAL_TOKENS)
    bos_id = tok.token_to_id(BOS)
    tok.post_processor = processors.Sequence(
        [
            processors.ByteLevel(add_prefix_space=False, trim_offsets=False),
            processors.TemplateProcessing(
                single=f"{BOS} $A",
                pair=f"{BOS} $A {BOS} $B:1",
                special_tokens=[(BOS, bos_id)],
            ),
        ]
    )
    assert tok.get_vocab_size() == VOCAB_SIZE, tok.get_vocab_size()
    return tok


def byte_level_char_to_byte() -> dict[str, int]:
    """Inverse of the byte-level alphabet: printable Latin-1 bytes stand for themselves,
    the remaining bytes are numbered upwards from U+0100 in byte order."""
    keep = [b for b in range(256) if 0x21 <= b <= 0x7E or 0xA1 <= b <= 0xAC or 0xAE <= b <= 0xFF]
    table, extra = {}, 0
    for b in range(256):
        if b in keep:
            table[chr(b)] = b
        else:
            table[chr(0x100 + extra)] = b
            extra += 1
    assert set(table) == set(pre_tokenizers.ByteLevel.alphabet())
    return table


def non_ascii_merges(tok: Tokenizer) -> list[str]:
    """Merged (multi-byte) vocab entries that contain at least one byte >= 0x80."""
    c2b = byte_level_char_to_byte()
    out = []
    for t in sorted(tok.get_vocab()):
        if t in SPECIAL_TOKENS or len(t) < 2:
            continue
        if any(c2b[c] >= 0x80 for c in t):
            out.append(t)
    return out


def tokenizer_config(inline_template: bool) -> dict:
    """Classic (transformers 4.x style) tokenizer_config.json, written by hand."""
    cfg = {
        "bos_token": BOS,
        "clean_up_tokenization_spaces": False,
        "eos_token": EOS,
        "model_max_length": MAX_POS,
        "pad_token": None,
        "tokenizer_class": "PreTrainedTokenizerFast",
    }
    if inline_template:
        cfg["chat_template"] = CHAT_TEMPLATE
    return cfg


def write_tokenizer(tok: Tokenizer, out: Path, inline_template: bool) -> None:
    if inline_template:
        tok.save(str(out / "tokenizer.json"), pretty=False)
        (out / "tokenizer_config.json").write_text(
            json.dumps(tokenizer_config(True), indent=2, ensure_ascii=False) + "\n"
        )
    else:
        # What transformers 5.x save_pretrained writes: the template in chat_template.jinja.
        fast = PreTrainedTokenizerFast(
            tokenizer_object=copy.deepcopy(tok),
            bos_token=BOS,
            eos_token=EOS,
            model_max_length=MAX_POS,
            clean_up_tokenization_spaces=False,
            chat_template=CHAT_TEMPLATE,
        )
        fast.save_pretrained(str(out))
        assert (out / "chat_template.jinja").exists(), "expected a separate chat_template.jinja"
        assert "chat_template" not in json.loads((out / "tokenizer_config.json").read_text())


# ----------------------------------------------------------------------------------
# Models
# ----------------------------------------------------------------------------------
def common(tok: Tokenizer) -> dict:
    return dict(
        vocab_size=VOCAB_SIZE,
        max_position_embeddings=MAX_POS,
        bos_token_id=tok.token_to_id(BOS),
        eos_token_id=tok.token_to_id(EOS),
        hidden_act="silu",
    )


def build_configs(tok: Tokenizer) -> dict:
    c = common(tok)
    return {
        "llama": LlamaConfig(
            **c,
            hidden_size=64,
            intermediate_size=INTERMEDIATE,
            num_hidden_layers=2,
            num_attention_heads=4,
            num_key_value_heads=2,
            rms_norm_eps=1e-5,
            tie_word_embeddings=False,
            rope_parameters={
                "rope_type": "llama3",
                "rope_theta": 500000.0,
                "factor": 8.0,
                "low_freq_factor": 1.0,
                "high_freq_factor": 4.0,
                # head_dim 16 -> wavelengths 2*pi*500000^(i/8) = 6.3, 32.4, 167, 862, ...:
                # i=0 is kept (< 64/4 = 16), i=1 is in the smoothed band (16..64),
                # i>=2 are divided by the factor (> 64).
                "original_max_position_embeddings": 64,
            },
        ),
        "llama_tied": LlamaConfig(
            **c,
            hidden_size=64,
            intermediate_size=INTERMEDIATE,
            num_hidden_layers=2,
            num_attention_heads=2,
            num_key_value_heads=2,
            rms_norm_eps=1e-6,
            tie_word_embeddings=True,
            rope_parameters={"rope_type": "default", "rope_theta": 10000.0},
        ),
        "qwen2": Qwen2Config(
            **c,
            hidden_size=96,
            intermediate_size=INTERMEDIATE,
            num_hidden_layers=2,
            num_attention_heads=6,
            num_key_value_heads=2,
            rms_norm_eps=1e-6,
            tie_word_embeddings=True,
            rope_parameters={"rope_type": "default", "rope_theta": 1000000.0},
            use_sliding_window=False,
            max_window_layers=2,
        ),
        "qwen3": Qwen3Config(
            **c,
            hidden_size=64,
            intermediate_size=INTERMEDIATE,
            num_hidden_layers=2,
            num_attention_heads=4,
            num_key_value_heads=2,
            head_dim=32,  # != hidden_size / num_attention_heads (16)
            rms_norm_eps=1e-6,
            tie_word_embeddings=True,
            rope_parameters={"rope_type": "default", "rope_theta": 1000000.0},
            use_sliding_window=False,
            max_window_layers=2,
        ),
        "mistral": MistralConfig(
            **c,
            hidden_size=64,
            intermediate_size=INTERMEDIATE,
            num_hidden_layers=2,
            num_attention_heads=4,
            num_key_value_heads=1,
            rms_norm_eps=1e-5,
            tie_word_embeddings=False,
            rope_parameters={"rope_type": "default", "rope_theta": 1000000.0},
            # Larger than max_position_embeddings, so it can never bite in these fixtures.
            sliding_window=4096,
        ),
    }


def init_weights(model: torch.nn.Module, seed: int) -> None:
    """Scaled-up random init so that the logits are far from uniform (decisive argmax)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():  # tied weights are listed once
            if name.endswith("norm.weight"):  # RMSNorm incl. qwen3 q_norm/k_norm
                val = 0.6 + 0.8 * torch.rand(p.shape, generator=g)
            elif name.endswith(".bias"):
                val = 0.3 * torch.randn(p.shape, generator=g)
            elif "embed_tokens" in name:  # also the output matrix when tied
                val = 0.3 * torch.randn(p.shape, generator=g)
            elif "lm_head" in name:
                val = 0.3 * torch.randn(p.shape, generator=g)
            else:  # attention and MLP projections
                val = 0.15 * torch.randn(p.shape, generator=g)
            p.copy_(val.to(p.dtype))


@torch.no_grad()
def pick_weights(cfg, first_seed: int, case_ids: list[list[int]], check_bf16: bool):
    """Try seeds first_seed, first_seed+1, ... until greedy decoding is decisive (every step's
    top1-top2 gap >= MIN_DECODE_GAP) and not a one-token loop, so that the greedy tokens are a
    robust test target. With check_bf16, the bf16-rounded weights (run in f32) must pass too."""
    for seed in range(first_seed, first_seed + MAX_SEED_TRIES):
        model = AutoModelForCausalLM.from_config(cfg, dtype=torch.float32, attn_implementation=ATTN_IMPL)
        model.eval()
        init_weights(model, seed)
        model.generation_config.eos_token_id = None
        candidates = [model]
        if check_bf16:
            candidates.append(copy.deepcopy(model).to(torch.bfloat16).to(torch.float32))
        ok = True
        for m in candidates:
            for ids in case_ids:
                gen, _ = greedy(m, ids)
                rows = full_logits(m, ids, gen)[len(ids) - 1 :]
                if float(top2_gaps(rows).min()) < MIN_DECODE_GAP or len(set(gen)) < MIN_DISTINCT:
                    ok = False
                    break
            if not ok:
                break
        if ok:
            return model, seed
    raise RuntimeError(f"no seed in {MAX_SEED_TRIES} tries gives decisive greedy decoding")


def generation_config(tok: Tokenizer) -> GenerationConfig:
    return GenerationConfig(
        bos_token_id=tok.token_to_id(BOS),
        eos_token_id=[tok.token_to_id(EOS), tok.token_to_id(IM_END)],
    )


def v4_dialect_config(cfg5: dict) -> dict:
    """Rewrite a transformers-5.x llama config.json into the 4.x dialect, by hand."""
    cfg = {k: v for k, v in cfg5.items() if k not in ("rope_parameters", "dtype")}
    rope = dict(cfg5["rope_parameters"])
    cfg["rope_theta"] = rope.pop("rope_theta")
    cfg["rope_scaling"] = dict(sorted(rope.items())) if rope.get("rope_type", "default") != "default" else None
    cfg["torch_dtype"] = cfg5["dtype"]
    cfg["transformers_version"] = "4.45.0"
    return dict(sorted(cfg.items()))


# ----------------------------------------------------------------------------------
# Oracle
# ----------------------------------------------------------------------------------
def load(model_dir: Path, dtype: torch.dtype):
    m = AutoModelForCausalLM.from_pretrained(str(model_dir), dtype=dtype, attn_implementation=ATTN_IMPL)
    m.eval()
    # Ignore EOS so that generation always makes NEW_TOKENS tokens (plain argmax, nothing masked).
    m.generation_config.eos_token_id = None
    return m


@torch.no_grad()
def greedy(model, input_ids: list[int]) -> tuple[list[int], torch.Tensor]:
    ids = torch.tensor([input_ids], dtype=torch.long)
    out = model.generate(
        ids,
        attention_mask=torch.ones_like(ids),
        do_sample=False,
        max_new_tokens=NEW_TOKENS,
        pad_token_id=model.config.eos_token_id,
        return_dict_in_generate=True,
        output_logits=True,
    )
    gen = out.sequences[0, len(input_ids):].tolist()
    assert len(gen) == NEW_TOKENS, f"generation stopped early: {len(gen)}"
    step_logits = torch.stack([x[0] for x in out.logits]).float()  # [32, vocab], KV-cache path
    return gen, step_logits


@torch.no_grad()
def full_logits(model, input_ids: list[int], generated: list[int]) -> torch.Tensor:
    seq = torch.tensor([input_ids + generated[:-1]], dtype=torch.long)
    return model(seq, attention_mask=torch.ones_like(seq)).logits[0].float()


def top2_gaps(logits: torch.Tensor) -> torch.Tensor:
    t = logits.topk(2, dim=-1).values
    return t[:, 0] - t[:, 1]


def run_case(model, ids: list[int], dtype_note: str) -> dict:
    gen, step = greedy(model, ids)
    logits = full_logits(model, ids, gen)
    n = len(ids)
    assert logits.shape == (n + NEW_TOKENS - 1, VOCAB_SIZE)
    # The decode rows of the full forward are the logits the greedy choices came from.
    decode_rows = logits[n - 1 :]
    assert decode_rows.argmax(-1).tolist() == gen, f"{dtype_note}: full-forward argmax != generate()"
    return {
        "generated": gen,
        "logits": logits,
        "kv_vs_full_max_abs_diff": float((step - decode_rows).abs().max()),
        "min_gap_decode": float(top2_gaps(decode_rows).min()),
        "min_gap_all": float(top2_gaps(logits).min()),
    }


def encode_cases(tok: Tokenizer) -> list[list[int]]:
    out = []
    for i, case in enumerate(CASES):
        ids = tok.encode(case["prompt"], add_special_tokens=case["add_special_tokens"]).ids
        out.append(ids)
    assert len(out[0]) == 1, out[0]
    assert out[1][0] == tok.token_to_id(BOS) and out[1].count(tok.token_to_id(BOS)) == 1
    assert not CASES[1]["prompt"].isascii()
    assert len(out[2]) >= 70, len(out[2])
    return out


def versions() -> dict:
    return {
        "transformers": transformers.__version__,
        "torch": torch.__version__,
        "tokenizers": tokenizers.__version__,
        "safetensors": safetensors.__version__,
        "numpy": np.__version__,
        "python": sys.version.split()[0],
    }


def check_hf_tokenizer(model_dir: Path, tok: Tokenizer, case_ids: list[list[int]]) -> dict:
    """Load the saved tokenizer with transformers: it must encode the cases like the raw
    tokenizer; also render the chat template (inline or chat_template.jinja) for the sidecar."""
    hf_tok = AutoTokenizer.from_pretrained(str(model_dir))
    for case, ids in zip(CASES, case_ids):
        got = hf_tok(case["prompt"], add_special_tokens=case["add_special_tokens"]).input_ids
        assert got == ids, (model_dir.name, case["prompt"], got, ids)
    assert hf_tok.bos_token == BOS and hf_tok.eos_token == EOS
    rendered = hf_tok.apply_chat_template(CHAT_MESSAGES, tokenize=False, add_generation_prompt=True)
    ids = hf_tok(rendered, add_special_tokens=False).input_ids
    assert ids == tok.encode(rendered, add_special_tokens=False).ids
    return {"messages": CHAT_MESSAGES, "add_generation_prompt": True, "rendered": rendered, "ids": ids}


def dumps(obj) -> str:
    """Indented JSON, but lists of numbers on one line (keeps the sidecars short)."""
    text = json.dumps(obj, indent=2, ensure_ascii=False)
    return re.sub(
        r"\[\s*(-?[0-9][-0-9.eE+]*(?:,\s*-?[0-9][-0-9.eE+]*)*)\s*\]",
        lambda m: "[" + ", ".join(x.strip() for x in m.group(1).split(",")) + "]",
        text,
    ) + "\n"


def write_json(path: Path, obj) -> None:
    path.write_text(dumps(obj))


def config_summary(cfg: dict) -> dict:
    keys = [
        "architectures", "num_hidden_layers", "hidden_size", "intermediate_size",
        "num_attention_heads", "num_key_value_heads", "head_dim", "vocab_size",
        "tie_word_embeddings", "rms_norm_eps", "rope_parameters", "rope_theta", "rope_scaling",
        "attention_bias", "sliding_window", "max_position_embeddings", "dtype", "torch_dtype",
    ]
    return {k: cfg[k] for k in keys if k in cfg}


@torch.no_grad()
def check_rope_scaling_matters(case_ids: list[list[int]], oracle: dict) -> float:
    """The llama3 scaling must change the result at these lengths (else the fixture could not
    catch a loader that ignores it): rerun llama with rope_type 'default' and compare."""
    cfg = json.loads((MODELS_DIR / "llama" / "config.json").read_text())
    cfg["rope_parameters"] = {"rope_type": "default", "rope_theta": cfg["rope_parameters"]["rope_theta"]}
    m = AutoModelForCausalLM.from_pretrained(
        str(MODELS_DIR / "llama"), config=LlamaConfig(**cfg), dtype=torch.float32, attn_implementation=ATTN_IMPL
    ).eval()
    i = len(case_ids) - 1
    seq = oracle[f"case{i}.input_ids"].tolist() + oracle[f"case{i}.generated_ids"].tolist()[:-1]
    plain = m(torch.tensor([seq])).logits[0]
    d = float((plain - oracle[f"case{i}.logits"]).abs().max())
    assert d > 1e-2, f"llama3 rope scaling has no visible effect ({d})"
    return d


def oracle_for(name: str, tok: Tokenizer, case_ids, seeds) -> tuple[dict, dict]:
    mdir = MODELS_DIR / name
    cfg_json = json.loads((mdir / "config.json").read_text())
    model = load(mdir, torch.float32)
    tensors: dict[str, torch.Tensor] = {}
    cases_meta = []
    for i, ids in enumerate(case_ids):
        r = run_case(model, ids, f"{name} case{i} f32")
        tensors[f"case{i}.input_ids"] = torch.tensor(ids, dtype=torch.int64)
        tensors[f"case{i}.generated_ids"] = torch.tensor(r["generated"], dtype=torch.int64)
        tensors[f"case{i}.logits"] = r["logits"].contiguous()
        cases_meta.append(
            {
                "index": i,
                "what": CASES[i]["what"],
                "prompt": CASES[i]["prompt"],
                "add_special_tokens": CASES[i]["add_special_tokens"],
                "prompt_len": len(ids),
                "input_ids": ids,
                "generated_ids": r["generated"],
                "generated_text": tok.decode(r["generated"], skip_special_tokens=False),
                "logits_shape": list(r["logits"].shape),
                "logits_abs_max": round(float(r["logits"].abs().max()), 4),
                "min_top1_top2_gap_decode_rows": round(r["min_gap_decode"], 6),
                "min_top1_top2_gap_all_rows": round(r["min_gap_all"], 6),
                "kv_cache_vs_full_forward_max_abs_diff": float(f"{r['kv_vs_full_max_abs_diff']:.3g}"),
            }
        )
    del model
    notes = [
        "logits: one full forward (no KV cache) over prompt + generated_ids[:-1]; row j is the "
        "next-token distribution after position j. Rows prompt_len-1 .. end are the decode steps: "
        "argmax(logits[prompt_len-1+k]) == generated_ids[k] (asserted).",
        f"greedy: transformers generate(do_sample=False), EOS ignored, always {NEW_TOKENS} new tokens. "
        f"Every greedy step has a top1-top2 gap >= {MIN_DECODE_GAP} (weights seed chosen for it).",
        "kv_cache_vs_full_forward_max_abs_diff: transformers' own f32 disagreement between its "
        "KV-cached decode and the full forward, a floor for any f32 tolerance.",
        f"attn_implementation={ATTN_IMPL}, torch threads=1, CPU.",
    ]
    sidecar = {
        "model": name,
        "model_dir": f"tests/fixtures/models/{name}",
        "tensors": f"{name}.safetensors",
        "compute_dtype": "float32",
        "weights_dtype": cfg_json.get("dtype", cfg_json.get("torch_dtype")),
        "num_new_tokens": NEW_TOKENS,
        "vocab_size": VOCAB_SIZE,
        "weights_seed": seeds[name],
        "config": config_summary(cfg_json),
        "versions": versions(),
        "cases": cases_meta,
        "chat": check_hf_tokenizer(mdir, tok, case_ids),
        "notes": notes,
    }
    return sidecar, tensors


def add_bf16(name: str, sidecar: dict, tensors: dict, case_ids, f32_reference: dict) -> None:
    mb = load(MODELS_DIR / name, torch.bfloat16)
    worst, diffs = 0.0, []
    for i, ids in enumerate(case_ids):
        meta = sidecar["cases"][i]
        gen_bf, _ = greedy(mb, ids)
        lb = full_logits(mb, ids, meta["generated_ids"])
        d = (lb - tensors[f"case{i}.logits"]).abs()
        diffs.append(d.flatten())
        worst = max(worst, float(d.max()))
        tensors[f"case{i}.logits_bf16"] = lb.contiguous()
        tensors[f"case{i}.generated_ids_bf16"] = torch.tensor(gen_bf, dtype=torch.int64)
        same = [a == b for a, b in zip(gen_bf, meta["generated_ids"])]
        meta["generated_ids_bf16"] = gen_bf
        meta["bf16_vs_f32_logits_max_abs_diff"] = round(float(d.max()), 4)
        meta["bf16_greedy_first_divergence"] = None if all(same) else same.index(False)
    del mb
    alld = torch.cat(diffs)
    sidecar["bf16_vs_f32_logits_abs_diff"] = {
        "max": round(worst, 4),
        "mean": round(float(alld.mean()), 4),
        "p99": round(float(alld.quantile(0.99)), 4),
    }
    # Effect of rounding the weights to bf16 alone (both computed in f32): qwen2 vs qwen2_bf16,
    # over the rows whose token prefix is the same in both (all of them if the greedy runs agree).
    worst_round = 0.0
    for i, ids in enumerate(case_ids):
        a, b = tensors[f"case{i}.generated_ids"].tolist(), f32_reference[f"case{i}.generated_ids"].tolist()
        same = next((k for k in range(NEW_TOKENS) if a[k] != b[k]), NEW_TOKENS)
        rows = len(ids) + min(same, NEW_TOKENS - 1)
        diff = tensors[f"case{i}.logits"][:rows] - f32_reference[f"case{i}.logits"][:rows]
        worst_round = max(worst_round, float(diff.abs().max()))
    sidecar["f32_vs_f32_weights_rounded_to_bf16_logits_max_abs_diff"] = round(worst_round, 4)
    sidecar["notes"].append(
        "weights are bf16: 'logits'/'generated_ids' upcast them to f32 and compute in f32. "
        "'logits_bf16': the model loaded and run in bfloat16 (torch CPU) over the SAME tokens as "
        "'logits' (prompt + generated_ids[:-1]), stored as f32. 'generated_ids_bf16': greedy decoding "
        "in bf16; it may diverge from generated_ids (bf16_greedy_first_divergence), and another bf16 "
        "implementation may diverge elsewhere, so compare bf16 greedy tokens only up to the first "
        "step whose f32 top1-top2 gap is small against the bf16 error."
    )


def fmt_rope(cfg: dict) -> str:
    rp = cfg.get("rope_parameters") or {}
    theta = f"{rp['rope_theta']:.0f}"
    if rp.get("rope_type", "default") == "default":
        return f"default, theta {theta}"
    return (f"{rp['rope_type']}, theta {theta}, factor {rp['factor']:g}, "
            f"low/high {rp['low_freq_factor']:g}/{rp['high_freq_factor']:g}, "
            f"orig_max_pos {rp['original_max_position_embeddings']}")


def write_readme(sidecars: dict, case_ids, n_multibyte: int, rope_effect: float) -> None:
    rows = []
    extra = {
        "llama": "llama3 rope scaling, untied",
        "llama_tied": "MHA, tied embeddings",
        "qwen2": "q/k/v bias (random, non-zero), GQA 3:1, tied",
        "qwen3": "per-head q/k RMSNorm (random weights), explicit head_dim 32 != 64/4, tied; "
        "chat template in chat_template.jinja (transformers 5.x tokenizer save)",
        "mistral": "GQA 4:1, untied, sliding_window 4096 (> max_position_embeddings, never active)",
        "qwen2_bf16": "qwen2 with bf16 weights; oracle also has bf16-compute logits",
        "llama_sharded": "llama, 2 shards + model.safetensors.index.json",
        "llama_v4": "llama, config.json in the transformers 4.x dialect",
    }
    for name, sc in sidecars.items():
        c = sc["config"]
        cfg = json.loads((MODELS_DIR / name / "config.json").read_text())
        if "rope_parameters" not in cfg:  # 4.x dialect
            rope = f"{cfg['rope_scaling']['rope_type']} (4.x keys)"
        else:
            rope = fmt_rope(cfg)
        hd = c.get("head_dim", c["hidden_size"] // c["num_attention_heads"])
        rows.append(
            f"| `{name}` | {c['architectures'][0]} | {c['num_hidden_layers']} | {c['hidden_size']} | "
            f"{c['intermediate_size']} | {c['num_attention_heads']}/{c['num_key_value_heads']} | {hd} | "
            f"{c['vocab_size']} | {'yes' if c['tie_word_embeddings'] else 'no'} | "
            f"{c.get('dtype', c.get('torch_dtype'))} | {rope} | {extra[name]} |"
        )
    bf = sidecars["qwen2_bf16"]["bf16_vs_f32_logits_abs_diff"]
    wr = sidecars["qwen2_bf16"]["f32_vs_f32_weights_rounded_to_bf16_logits_max_abs_diff"]
    kv = max(c["kv_cache_vs_full_forward_max_abs_diff"] for sc in sidecars.values() for c in sc["cases"])
    gap = min(c["min_top1_top2_gap_decode_rows"] for sc in sidecars.values() for c in sc["cases"])
    case_lines = "\n".join(
        f"| {i} | {len(ids)} | {len(ids) + NEW_TOKENS - 1} | {CASES[i]['what']} | `{CASES[i]['prompt']}` |"
        for i, ids in enumerate(case_ids)
    )
    v = versions()
    text = f"""# Test fixtures

Generated by `scripts/make_oracle_fixtures.py` (HF transformers as the oracle). Do not edit by
hand; regenerate instead. CI does not run the generator, it only reads these files.

## Regenerating

```sh
/work/.venv-oracle/bin/python scripts/make_oracle_fixtures.py   # any venv with the versions below
du -sh tests/fixtures                                            # must stay under 5 MB
```

The script deletes and rewrites `tests/fixtures/models/` and `tests/fixtures/oracle/`. It is
deterministic (fixed seeds, one torch thread, deterministic algorithms): a re-run with the same
library versions gives byte-identical files. Nothing is downloaded; configs are built locally.
Generated with transformers {v['transformers']}, torch {v['torch']}, tokenizers {v['tokenizers']},
safetensors {v['safetensors']}.

## Tokenizer

One byte-level BPE tokenizer shared by all models, trained on `scripts/oracle_corpus.txt`
(original prose with some accents, CJK and emoji): ByteLevel pre-tokenizer (GPT-2 regex, no
prefix space) and ByteLevel decoder, {VOCAB_SIZE} tokens = {VOCAB_SIZE - len(SPECIAL_TOKENS)} BPE (256 byte alphabet + merges)
+ 4 specials at the end: {", ".join(f"`{t}`={VOCAB_SIZE - len(SPECIAL_TOKENS) + k}" for k, t in enumerate(SPECIAL_TOKENS))}.
{n_multibyte} merged tokens contain non-ASCII bytes, some of them partial UTF-8 sequences (e.g. the
first two bytes of an emoji), so incremental detokenisation has to buffer bytes. The post-processor
prepends `<|begin_of_text|>` when special tokens are added (Llama-3 style). `tokenizer_config.json`
names bos `<|begin_of_text|>` and eos `<|end_of_text|>` and holds a ChatML-style `chat_template`,
except `qwen3`, whose tokenizer files are as transformers 5.x `save_pretrained` writes them:
template in `chat_template.jinja`, `tokenizer_class: TokenizersBackend`.
`generation_config.json` has `eos_token_id: [<|end_of_text|>, <|im_end|>]`; `config.json` has the
single `<|end_of_text|>` id.

## Models (`models/<name>/`)

Random weights (std 0.15 projections, 0.3 embeddings / lm_head, RMSNorm weights uniform in
[0.6, 1.4], qkv biases std 0.3); rms_norm_eps varies (1e-5 llama/mistral, 1e-6 others), so a
loader that ignores it is caught. All f32 except `qwen2_bf16`. max_position_embeddings 512.

| name | class | layers | hidden | mlp | heads/kv | head_dim | vocab | tied | dtype | rope | notes |
|---|---|---|---|---|---|---|---|---|---|---|---|
{chr(10).join(rows)}

`llama`'s llama3 scaling (head_dim 16, original_max_position_embeddings 64) leaves frequency 0
alone, smooths frequency 1 and divides frequencies 2..7 by 8; dropping it changes the long case's
logits by up to {rope_effect:.2f} (checked). `llama_sharded` and `llama_v4` hold exactly `llama`'s
weights and load to bitwise-identical logits (checked), so their oracle is `llama.safetensors`.

## Oracle (`oracle/<name>.safetensors` + `oracle/<name>.json`)

Cases (token counts with this tokenizer; every model uses the same ones):

| case | prompt tokens | logits rows | what | prompt |
|---|---|---|---|---|
{case_lines}

Tensors per case `i`:

- `case{{i}}.input_ids` i64 `[prompt_len]`
- `case{{i}}.generated_ids` i64 `[{NEW_TOKENS}]`: greedy, f32, EOS ignored (always {NEW_TOKENS} tokens)
- `case{{i}}.logits` f32 `[prompt_len + {NEW_TOKENS - 1}, vocab]`: one full forward over
  `input_ids + generated_ids[:-1]`, logits at every position; `argmax(logits[prompt_len-1+k]) ==
  generated_ids[k]`
- `qwen2_bf16` only: `case{{i}}.logits_bf16` (model run in bf16 over the same tokens, stored as
  f32) and `case{{i}}.generated_ids_bf16` (greedy in bf16)

The JSON sidecar (`tensors` names the safetensors file to read) has the prompts, token ids,
decoded generations, a config summary, library versions, a rendered chat-template example (with
its token ids) and per-case numbers useful for tolerances:

- every greedy step's top1-top2 logit gap is >= {MIN_DECODE_GAP} (seeds chosen so); smallest here {gap:.4f}
- transformers' own KV-cache vs full-forward f32 difference: <= {kv:.2g}
- `qwen2_bf16`, bf16 compute vs f32 compute: max |Δlogit| {bf['max']}, p99 {bf['p99']},
  mean {bf['mean']} (logits up to ~{max(c['logits_abs_max'] for c in sidecars['qwen2_bf16']['cases']):.0f} in magnitude);
  rounding the weights to bf16 alone moves the f32 logits by up to {wr} (`qwen2` vs `qwen2_bf16`,
  both f32 compute). bf16 greedy decoding drifts from the f32 tokens after a dozen or so steps in
  the longer cases (`bf16_greedy_first_divergence` in the sidecar); compare bf16 tokens only up to
  there, or teacher-force and compare `logits_bf16` with a loose bound.
"""
    (FIXTURES / "README.md").write_text(text)


def main() -> None:
    torch.manual_seed(BASE_SEED)
    torch.set_num_threads(1)
    torch.use_deterministic_algorithms(True)

    for d in (MODELS_DIR, ORACLE_DIR):
        if d.exists():
            shutil.rmtree(d)
        d.mkdir(parents=True)

    tok = train_tokenizer()
    case_ids = encode_cases(tok)
    multibyte = non_ascii_merges(tok)
    assert len(multibyte) >= 3, "too few merged tokens with non-ASCII bytes; grow the vocab or the corpus"

    # ---- build + save the models ----
    configs = build_configs(tok)
    seeds = {}
    for idx, (name, cfg) in enumerate(configs.items()):
        model, seeds[name] = pick_weights(cfg, BASE_SEED + 1000 * (idx + 1), case_ids, check_bf16=(name == "qwen2"))
        model.generation_config = generation_config(tok)
        out = MODELS_DIR / name
        model.save_pretrained(str(out))
        write_tokenizer(tok, out, inline_template=(name != "qwen3"))
        if name == "qwen2":
            copy.deepcopy(model).to(torch.bfloat16).save_pretrained(str(MODELS_DIR / "qwen2_bf16"))
            write_tokenizer(tok, MODELS_DIR / "qwen2_bf16", inline_template=True)
            seeds["qwen2_bf16"] = seeds[name]
        if name == "llama":
            sh = MODELS_DIR / "llama_sharded"
            model.save_pretrained(str(sh), max_shard_size=SHARD_SIZE)
            write_tokenizer(tok, sh, inline_template=True)
            n_shards = len(list(sh.glob("model-*-of-*.safetensors")))
            assert 2 <= n_shards <= 3 and (sh / "model.safetensors.index.json").exists(), n_shards
            v4 = MODELS_DIR / "llama_v4"
            v4.mkdir()
            for f in ("model.safetensors", "generation_config.json", "tokenizer.json", "tokenizer_config.json"):
                shutil.copyfile(out / f, v4 / f)
            write_json(v4 / "config.json", v4_dialect_config(json.loads((out / "config.json").read_text())))
            seeds["llama_sharded"] = seeds["llama_v4"] = seeds[name]
        del model

    # ---- oracle ----
    order = ["llama", "llama_tied", "qwen2", "qwen3", "mistral", "qwen2_bf16", "llama_sharded", "llama_v4"]
    sidecars, all_tensors = {}, {}
    for name in order:
        sidecar, tensors = oracle_for(name, tok, case_ids, seeds)
        if name == "qwen2_bf16":
            add_bf16(name, sidecar, tensors, case_ids, all_tensors["qwen2"])
        if name in ("llama_sharded", "llama_v4"):
            # Same weights as llama: must reproduce llama's oracle bit for bit; don't duplicate it.
            assert tensors.keys() == all_tensors["llama"].keys()
            for k, v in tensors.items():
                assert torch.equal(v, all_tensors["llama"][k]), f"{name}: {k} differs from llama"
            sidecar["tensors"] = "llama.safetensors"
            sidecar["same_weights_as"] = "llama"
            what = ("saved with max_shard_size=" + SHARD_SIZE + " (model-0000k-of-0000n.safetensors + index)"
                    if name == "llama_sharded" else
                    "config.json hand-written in the transformers 4.x dialect (top-level rope_theta, "
                    "rope_scaling {rope_type: llama3, ...}, torch_dtype)")
            sidecar["notes"].append(
                f"same weights as 'llama', {what}; transformers loads it to bitwise-identical logits "
                "(checked), so the oracle tensors are llama.safetensors."
            )
        else:
            save_file(tensors, str(ORACLE_DIR / f"{name}.safetensors"), metadata={"model": name})
        all_tensors[name] = tensors
        sidecars[name] = sidecar
        write_json(ORACLE_DIR / f"{name}.json", sidecar)

    rope_effect = check_rope_scaling_matters(case_ids, all_tensors["llama"])
    write_readme(sidecars, case_ids, len(multibyte), rope_effect)

    print("prompt lengths:", [len(x) for x in case_ids], "| non-ASCII merges:", len(multibyte))
    for name, sc in sidecars.items():
        cs = sc["cases"]
        print(
            f"{name:14s} seed={sc['weights_seed']} min_gap_decode={min(c['min_top1_top2_gap_decode_rows'] for c in cs):.4f} "
            f"kv_vs_full={max(c['kv_cache_vs_full_forward_max_abs_diff'] for c in cs):.2g} "
            f"|logit|max={max(c['logits_abs_max'] for c in cs):.1f} distinct={[len(set(c['generated_ids'])) for c in cs]}"
        )
    print("bf16 vs f32:", sidecars["qwen2_bf16"]["bf16_vs_f32_logits_abs_diff"],
          "weights-rounding only:", sidecars["qwen2_bf16"]["f32_vs_f32_weights_rounded_to_bf16_logits_max_abs_diff"])
    print("llama3 rope scaling effect:", rope_effect)


if __name__ == "__main__":
    main()
