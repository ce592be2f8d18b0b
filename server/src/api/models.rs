//! `GET /v1/models` and `GET /v1/models/{model}`: one card per served name.

use axum::extract::{Path, State};
use axum::Json;
use serde::Serialize;

use super::errors::ApiError;
use super::{AppState, ModelInfo};

#[derive(Debug, Serialize)]
pub struct ModelCard {
    id: String,
    object: &'static str,
    created: u64,
    owned_by: &'static str,
    root: String,
    parent: Option<String>,
    max_model_len: usize,
}

#[derive(Debug, Serialize)]
pub struct ModelList {
    object: &'static str,
    data: Vec<ModelCard>,
}

fn card(model: &ModelInfo, name: &str) -> ModelCard {
    ModelCard {
        id: name.to_string(),
        object: "model",
        created: model.created,
        owned_by: "tandem",
        root: model.root.clone(),
        parent: None,
        max_model_len: model.max_model_len,
    }
}

pub async fn list(State(state): State<AppState>) -> Json<ModelList> {
    let data = state
        .model
        .names
        .iter()
        .map(|n| card(&state.model, n))
        .collect();
    Json(ModelList {
        object: "list",
        data,
    })
}

pub async fn retrieve(
    State(state): State<AppState>,
    Path(name): Path<String>,
) -> Result<Json<ModelCard>, ApiError> {
    state.model.check_name(Some(&name))?;
    Ok(Json(card(&state.model, &name)))
}
