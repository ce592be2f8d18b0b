"""Retrieval quality with the default embedder (all-MiniLM-L6-v2): a corpus
and questions written for this test (data/rag_corpus.json); the document
that answers each question must be among the top 5 for 90 % of them."""

import json
import uuid
from pathlib import Path

DATA = Path(__file__).parent / "data" / "rag_corpus.json"


def test_recall_at_5_is_at_least_0_9(rag_server):
    corpus = json.loads(DATA.read_text())
    assert len(corpus["questions"]) >= 50
    name = "quality-" + uuid.uuid4().hex[:8]
    docs = [{"text": d["text"], "metadata": {"key": d["key"]}} for d in corpus["documents"]]
    status, body = rag_server.post("/index", {"index_name": name, "documents": docs})
    assert status == 200, body
    misses = []
    for q in corpus["questions"]:
        status, body = rag_server.post("/retrieve", {"index_name": name, "query": q["q"], "max_node_count": 5})
        assert status == 200, body
        keys = [r["metadata"]["key"] for r in json.loads(body)["results"]]
        if q["key"] not in keys:
            misses.append((q["q"], q["key"], keys))
    recall = 1 - len(misses) / len(corpus["questions"])
    print(f"recall@5 = {recall:.3f} over {len(corpus['questions'])} questions; misses: {misses}")
    assert recall >= 0.9, misses
