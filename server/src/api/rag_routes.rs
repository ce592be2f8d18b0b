//! KAITO RAGEngine's HTTP routes, same paths, defaults, status codes and
//! bodies; [`super::router`] merges them in with [`routes`]. Handlers are
//! thin: parse and range-check, call the [`RagService`], time it for
//! `/metrics`, answer errors in KAITO's shape ([`super::rag_errors`]).

use std::collections::HashMap;
use std::future::Future;
use std::sync::Arc;
use std::time::Instant;

use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::de::DeserializeOwned;
use serde_json::{json, Value};

use super::rag_errors::kaito_response;
use super::AppState;
use crate::rag::error::RagError;
use crate::rag::metrics::Route;
use crate::rag::types::{
    DeleteDocumentRequest, IndexRequest, ListDocumentsResponse, Message, Metadata, RetrieveRequest,
    RetrieveResponse, UpdateDocumentRequest,
};
use crate::rag::RagService;

/// KAITO's `RAG_MAX_TOP_K`.
pub const MAX_NODE_COUNT: i64 = 300;

/// Most documents one `/index` or update request may carry.
pub const MAX_DOCUMENTS_PER_REQUEST: usize = 1000;
/// Longest document text, in bytes (it is chunked and embedded whole).
pub const MAX_DOCUMENT_BYTES: usize = 4 << 20;

/// A batch within [`MAX_DOCUMENTS_PER_REQUEST`] of texts within
/// [`MAX_DOCUMENT_BYTES`]; the error names the limit and the value.
fn check_batch(documents: &[crate::rag::types::Document]) -> Result<(), RagError> {
    if documents.len() > MAX_DOCUMENTS_PER_REQUEST {
        return Err(RagError::BadRequest(format!(
            "documents has {} entries; at most {MAX_DOCUMENTS_PER_REQUEST} are allowed per \
             request: send them in several requests",
            documents.len()
        )));
    }
    match documents
        .iter()
        .position(|d| d.text.len() > MAX_DOCUMENT_BYTES)
    {
        Some(i) => Err(RagError::BadRequest(format!(
            "documents[{i}].text is {} bytes; a document is at most {MAX_DOCUMENT_BYTES} bytes: \
             split it into several documents",
            documents[i].text.len()
        ))),
        None => Ok(()),
    }
}

/// The RAG routes, or none when RAG is off.
pub fn routes(state: &AppState) -> Router<AppState> {
    if state.rag.is_none() {
        return Router::new();
    }
    Router::new()
        .route("/index", post(index))
        .route("/indexes", get(list_indexes))
        .route("/indexes/{name}", axum::routing::delete(delete_index))
        .route(
            "/indexes/{name}/documents",
            get(list_documents).post(update_documents),
        )
        .route("/indexes/{name}/documents/delete", post(delete_documents))
        .route("/persist/{name}", post(persist))
        .route("/load/{name}", post(load))
        .route("/retrieve", post(retrieve))
}

/// Paths that change or reveal indexes: guarded by `--api-key` like `/v1`.
pub fn is_rag_path(path: &str) -> bool {
    ["/index", "/indexes", "/persist/", "/load/", "/retrieve"]
        .iter()
        .any(|p| path == p.trim_end_matches('/') || path.starts_with(p))
}

fn service(state: &AppState) -> Result<Arc<RagService>, RagError> {
    state
        .rag
        .clone()
        .ok_or_else(|| RagError::BadRequest("RAG is off on this server (--no-rag)".into()))
}

/// Runs a handler body and records `rag_<route>_*` for it.
async fn timed<T: IntoResponse>(
    state: &AppState,
    route: Route,
    body: impl Future<Output = Result<T, RagError>>,
) -> Response {
    let start = Instant::now();
    let result = body.await;
    if let Some(rag) = &state.rag {
        rag.metrics
            .on_route(route, result.is_ok(), start.elapsed().as_secs_f64());
    }
    match result {
        Ok(v) => v.into_response(),
        Err(e) => kaito_response(e),
    }
}

/// A JSON body; a wrong field is a 422 naming it (FastAPI's shape).
fn parse<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, RagError> {
    let mut de = serde_json::Deserializer::from_slice(bytes);
    serde_path_to_error::deserialize(&mut de).map_err(|e| {
        let path = e.path().to_string();
        let mut loc = vec!["body"];
        if path != "." {
            loc.push(&path);
        }
        RagError::invalid(&loc, e.inner().to_string(), Value::Null)
    })
}

async fn index(State(state): State<AppState>, body: Bytes) -> Response {
    timed(&state, Route::Index, async {
        let req: IndexRequest = parse(&body)?;
        check_batch(&req.documents)?;
        let svc = service(&state)?;
        Ok(Json(
            svc.index_documents(&req.index_name, req.documents).await?,
        ))
    })
    .await
}

async fn list_indexes(State(state): State<AppState>) -> Response {
    timed(&state, Route::ListIndexes, async {
        Ok(Json(service(&state)?.list_indexes()?))
    })
    .await
}

/// An integer query parameter within `[min, max]`, else 422.
fn int_param(
    q: &HashMap<String, String>,
    name: &str,
    default: i64,
    min: i64,
    max: Option<i64>,
) -> Result<i64, RagError> {
    let Some(raw) = q.get(name) else {
        return Ok(default);
    };
    let loc = ["query", name];
    let v: i64 = raw
        .parse()
        .map_err(|_| RagError::invalid(&loc, "Input should be a valid integer", json!(raw)))?;
    if v < min {
        return Err(RagError::invalid(
            &loc,
            format!("Input should be greater than or equal to {min}"),
            json!(raw),
        ));
    }
    if let Some(max) = max.filter(|&m| v > m) {
        return Err(RagError::invalid(
            &loc,
            format!("Input should be less than or equal to {max}"),
            json!(raw),
        ));
    }
    Ok(v)
}

async fn list_documents(
    State(state): State<AppState>,
    Path(name): Path<String>,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    timed(&state, Route::ListDocuments, async {
        let limit = int_param(&q, "limit", 10, 1, Some(100))? as usize;
        let offset = int_param(&q, "offset", 0, 0, None)? as usize;
        let max_text_length = int_param(&q, "max_text_length", 1000, 1, None)? as usize;
        let filter: Option<Metadata> = match q.get("metadata_filter").filter(|s| !s.is_empty()) {
            None => None,
            Some(s) => Some(serde_json::from_str(s).map_err(|_| {
                RagError::BadRequest(
                    "Invalid metadata filter format. Must be a valid JSON string.".into(),
                )
            })?),
        };
        let (documents, total_items) = service(&state)?.list_documents(
            &name,
            offset,
            limit,
            Some(max_text_length),
            filter.as_ref(),
        )?;
        Ok(Json(ListDocumentsResponse {
            count: documents.len(),
            documents,
            total_items,
        }))
    })
    .await
}

async fn update_documents(
    State(state): State<AppState>,
    Path(name): Path<String>,
    body: Bytes,
) -> Response {
    timed(&state, Route::UpdateDocuments, async {
        let req: UpdateDocumentRequest = parse(&body)?;
        check_batch(&req.documents)?;
        Ok(Json(
            service(&state)?
                .update_documents(&name, req.documents)
                .await?,
        ))
    })
    .await
}

async fn delete_documents(
    State(state): State<AppState>,
    Path(name): Path<String>,
    body: Bytes,
) -> Response {
    timed(&state, Route::DeleteDocuments, async {
        let req: DeleteDocumentRequest = parse(&body)?;
        Ok(Json(
            service(&state)?
                .delete_documents(&name, req.doc_ids)
                .await?,
        ))
    })
    .await
}

async fn delete_index(State(state): State<AppState>, Path(name): Path<String>) -> Response {
    timed(&state, Route::DeleteIndex, async {
        service(&state)?.delete_index(&name).await?;
        Ok(Json(Message {
            message: format!("Successfully deleted index {name}."),
        }))
    })
    .await
}

async fn persist(
    State(state): State<AppState>,
    Path(name): Path<String>,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    timed(&state, Route::Persist, async {
        let dir = service(&state)?
            .persist(&name, q.get("path").map(String::as_str))
            .await?;
        Ok(Json(Message {
            message: format!("Successfully persisted index {name} to {}.", dir.display()),
        }))
    })
    .await
}

async fn load(
    State(state): State<AppState>,
    Path(name): Path<String>,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    timed(&state, Route::Load, async {
        let overwrite = match q.get("overwrite").map(|s| s.to_ascii_lowercase()) {
            None => false,
            Some(s) if ["true", "1", "yes", "on"].contains(&s.as_str()) => true,
            Some(s) if ["false", "0", "no", "off"].contains(&s.as_str()) => false,
            Some(s) => {
                return Err(RagError::invalid(
                    &["query", "overwrite"],
                    "Input should be a valid boolean",
                    json!(s),
                ))
            }
        };
        let dir = service(&state)?
            .load(&name, q.get("path").map(String::as_str), overwrite)
            .await?;
        Ok(Json(Message {
            message: format!("Successfully loaded index {name} from {}.", dir.display()),
        }))
    })
    .await
}

async fn retrieve(State(state): State<AppState>, body: Bytes) -> Response {
    timed(&state, Route::Retrieve, async {
        let req: RetrieveRequest = parse(&body)?;
        if !(1..=MAX_NODE_COUNT).contains(&req.max_node_count) {
            return Err(RagError::invalid(
                &["body", "max_node_count"],
                format!("max_node_count must be between 1 and {MAX_NODE_COUNT}"),
                json!(req.max_node_count),
            ));
        }
        let hits = service(&state)?
            .retrieve(
                &req.index_name,
                &req.query,
                req.max_node_count as usize,
                req.metadata_filter.as_ref(),
            )
            .await?;
        let results: Vec<_> = hits.iter().map(|h| h.to_node()).collect();
        Ok(Json(RetrieveResponse {
            query: req.query,
            count: results.len(),
            results,
        }))
    })
    .await
}
