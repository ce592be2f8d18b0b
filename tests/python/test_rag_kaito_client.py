"""The official `kaito-rag-engine-client` against a real `tandem serve`:
every KAITO RAGEngine endpoint, its statuses and its response shapes."""

import hashlib
import json
import signal
import uuid

import pytest
from kaito_rag_engine_client import Client
from kaito_rag_engine_client.api.index import (
    create_index,
    delete_documents_in_index,
    delete_index,
    list_documents_in_index,
    list_indexes,
    load_index,
    persist_index,
    retrieve_index,
    update_documents_in_index,
)
from kaito_rag_engine_client.api.monitoring import get_health, get_metrics
from kaito_rag_engine_client.models import (
    DeleteDocumentRequest,
    Document,
    IndexRequest,
    RetrieveRequest,
    UpdateDocumentRequest,
)
from kaito_rag_engine_client.models.document_metadata_type_0 import DocumentMetadataType0
from kaito_rag_engine_client.models.retrieve_request_metadata_filter_type_0 import (
    RetrieveRequestMetadataFilterType0,
)

from conftest import Server

DOCS = [
    ("Lighthouses use Fresnel lenses to focus their beam far out to sea.", {"topic": "sea", "year": 1822}),
    ("Sourdough starters are cultures of wild yeast and lactic acid bacteria.", {"topic": "food"}),
    ("Glaciers carve U-shaped valleys as the ice flows downhill.", {"topic": "ice"}),
]


def meta(d: dict) -> DocumentMetadataType0:
    return DocumentMetadataType0.from_dict(d)


@pytest.fixture
def kaito(rag_server):
    with Client(base_url=rag_server.url, timeout=60) as c:
        yield c


@pytest.fixture
def index_name():
    return "kc-" + uuid.uuid4().hex[:8]


def index_docs(kaito, name):
    body = IndexRequest(index_name=name, documents=[Document(text=t, metadata=meta(m)) for t, m in DOCS])
    return create_index.sync(client=kaito, body=body)


def test_health_and_metrics(kaito):
    health = get_health.sync(client=kaito)
    assert health.status == "Healthy"
    r = get_metrics.sync_detailed(client=kaito)
    assert r.status_code == 200


def test_index_list_and_documents(kaito, index_name):
    out = index_docs(kaito, index_name)
    assert [d.doc_id for d in out] == [hashlib.sha256(t.encode()).hexdigest() for t, _ in DOCS]
    assert out[0].metadata.to_dict() == DOCS[0][1]
    assert index_name in list_indexes.sync(client=kaito)
    # Re-indexing the same text is skipped.
    index_docs(kaito, index_name)
    page = list_documents_in_index.sync(index_name, client=kaito, limit=2, offset=1, max_text_length=10)
    assert (page.count, page.total_items) == (2, 3)
    assert page.documents[0].text == DOCS[1][0][:10]
    assert page.documents[0].is_truncated
    assert page.documents[0].hash_value
    filtered = list_documents_in_index.sync(index_name, client=kaito, metadata_filter=json.dumps({"topic": "ice"}))
    assert filtered.total_items == 1 and filtered.documents[0].text == DOCS[2][0]
    # Empty list: [] and no index.
    assert create_index.sync(client=kaito, body=IndexRequest(index_name=index_name + "-e", documents=[])) == []
    assert index_name + "-e" not in list_indexes.sync(client=kaito)


def test_list_documents_errors(kaito, index_name):
    index_docs(kaito, index_name)
    r = list_documents_in_index.sync_detailed(index_name, client=kaito, limit=101)
    assert r.status_code == 422
    assert r.parsed.detail[0].loc == ["query", "limit"]
    r = list_documents_in_index.sync_detailed(index_name, client=kaito, metadata_filter="{not json")
    assert r.status_code == 400
    r = list_documents_in_index.sync_detailed("missing-index", client=kaito)
    assert r.status_code == 404
    assert json.loads(r.content) == {"detail": "No such index: 'missing-index' exists."}


def test_update_and_delete_documents(kaito, index_name):
    out = index_docs(kaito, index_name)
    sea_id = out[0].doc_id
    body = UpdateDocumentRequest(documents=[
        Document(doc_id=sea_id, text="Lighthouses flash in patterns so sailors can tell them apart.", metadata=meta({"topic": "sea"})),
        Document(doc_id=out[1].doc_id, text=DOCS[1][0], metadata=meta(DOCS[1][1])),
        Document(doc_id="0" * 64, text="nobody", metadata=meta({})),
    ])
    r = update_documents_in_index.sync(index_name, client=kaito, body=body)
    assert [d.doc_id for d in r.updated_documents] == [sea_id]
    assert [d.doc_id for d in r.unchanged_documents] == [out[1].doc_id]
    assert [d.doc_id for d in r.not_found_documents] == ["0" * 64]
    hits = retrieve_index.sync(client=kaito, body=RetrieveRequest(index_name=index_name, query="lighthouse flash patterns"))
    assert hits.results[0].doc_id == sea_id, "the doc id stays; the new text is searched at once"
    assert "patterns" in hits.results[0].text
    r = delete_documents_in_index.sync(index_name, client=kaito, body=DeleteDocumentRequest(doc_ids=[sea_id, "x"]))
    assert (r.deleted_doc_ids, r.not_found_doc_ids) == ([sea_id], ["x"])
    hits = retrieve_index.sync(client=kaito, body=RetrieveRequest(index_name=index_name, query="lighthouse"))
    assert all(h.doc_id != sea_id for h in hits.results)


def test_retrieve_shapes_filters_and_errors(kaito, index_name):
    index_docs(kaito, index_name)
    r = retrieve_index.sync(client=kaito, body=RetrieveRequest(index_name=index_name, query="wild yeast bread", max_node_count=2))
    assert r.count == len(r.results) == 2
    top = r.results[0]
    assert top.text == DOCS[1][0]
    assert top.source in ("both", "dense_only", "sparse_only")
    assert abs(top.score - (0.7 * top.dense_score + 0.3 * top.sparse_score)) < 1e-5
    assert r.results[0].score >= r.results[1].score
    flt = RetrieveRequestMetadataFilterType0.from_dict({"topic": "ice"})
    r = retrieve_index.sync(client=kaito, body=RetrieveRequest(index_name=index_name, query="wild yeast bread", metadata_filter=flt))
    assert [h.metadata.to_dict()["topic"] for h in r.results] == ["ice"], "KAITO's FAISS path answers 500 here"
    r = retrieve_index.sync_detailed(client=kaito, body=RetrieveRequest(index_name=index_name, query="x", max_node_count=301))
    assert r.status_code == 422
    r = retrieve_index.sync_detailed(client=kaito, body=RetrieveRequest(index_name=index_name, query="   "))
    assert r.status_code == 400
    r = retrieve_index.sync_detailed(client=kaito, body=RetrieveRequest(index_name="missing-index", query="x"))
    assert r.status_code == 404


def test_persist_load_delete(kaito, index_name, rag_server):
    index_docs(kaito, index_name)
    r = persist_index.sync_detailed(index_name, client=kaito)  # path=storage: <storage>/<name>
    assert r.status_code == 200, r.content
    assert "Successfully persisted index" in r.parsed["message"]
    for bad in ["../escape", "/etc/tandem-test", "a/../../b"]:
        assert persist_index.sync_detailed(index_name, client=kaito, path=bad).status_code == 400, bad
    assert persist_index.sync_detailed(index_name, client=kaito, path=f"backups/{index_name}").status_code == 200
    assert load_index.sync_detailed(index_name, client=kaito).status_code == 409
    assert load_index.sync_detailed(index_name, client=kaito, overwrite=True).status_code == 200
    copy = index_name + "-copy"
    assert load_index.sync_detailed(copy, client=kaito, path=f"backups/{index_name}").status_code == 200
    assert list_documents_in_index.sync(copy, client=kaito).total_items == 3
    assert load_index.sync_detailed("never-saved", client=kaito).status_code == 404
    assert delete_index.sync_detailed(copy, client=kaito).status_code == 200
    r = delete_index.sync_detailed(copy, client=kaito)
    assert r.status_code == 404
    assert persist_index.sync_detailed("bad.name", client=kaito).status_code == 400


def test_metrics_carry_kaito_families(rag_server, kaito, index_name):
    index_docs(kaito, index_name)
    retrieve_index.sync(client=kaito, body=RetrieveRequest(index_name=index_name, query="glacier"))
    assert rag_server.metric("rag_index_requests_total") >= 1
    assert rag_server.metric("rag_indexes_retrieve_requests_total") >= 1
    assert rag_server.metric("rag_embedding_requests_total") >= 1
    assert rag_server.metric("vllm:num_requests_running") == 0


def test_sigterm_persists_and_load_on_start_restores(model_dir, tmp_path):
    storage = tmp_path / "store"
    first = Server(model_dir, rag_dir=storage)
    try:
        with Client(base_url=first.url, timeout=60) as c:
            body = IndexRequest(index_name="kept", documents=[Document(text=t, metadata=meta(m)) for t, m in DOCS])
            create_index.sync(client=c, body=body)
    finally:
        assert first.stop(signal.SIGTERM) == 0
    assert (storage / "kept" / "manifest.json").is_file()
    second = Server(model_dir, "--rag-load-on-start", rag_dir=storage)
    try:
        with Client(base_url=second.url, timeout=60) as c:
            assert list_indexes.sync(client=c) == ["kept"]
            r = retrieve_index.sync(client=c, body=RetrieveRequest(index_name="kept", query="Fresnel lens"))
            assert r.results[0].text == DOCS[0][0]
    finally:
        second.stop()
