//! Structured outputs as the API spells them: OpenAI's `response_format`
//! and vLLM's `guided_json`, `guided_regex`, `guided_choice` and
//! `guided_grammar`, turned into the engine's one [`GuidedDecoding`] and
//! compiled once on the blocking pool, so a bad schema or grammar is a 400
//! naming it before anything is queued.

use serde_json::Value;
use tandem_engine::guided::GuidedDecoding;

use super::errors::ApiError;
use super::validation::{SamplingFields, Validated};
use super::{blocking, AppState};

/// The request's constraint and the field that set it, if one did; more
/// than one is an error.
pub fn from_fields(
    fields: &SamplingFields,
) -> Result<Option<(&'static str, GuidedDecoding)>, ApiError> {
    let mut found: Vec<(&'static str, GuidedDecoding)> = Vec::new();
    if let Some(rf) = &fields.response_format {
        if let Some(spec) = response_format(rf)? {
            found.push(("response_format", spec));
        }
    }
    if let Some(j) = &fields.guided_json {
        found.push(("guided_json", GuidedDecoding::JsonSchema(guided_json(j)?)));
    }
    if let Some(r) = &fields.guided_regex {
        found.push(("guided_regex", GuidedDecoding::Regex(r.clone())));
    }
    if let Some(c) = &fields.guided_choice {
        found.push(("guided_choice", GuidedDecoding::Choice(c.clone())));
    }
    if let Some(g) = &fields.guided_grammar {
        found.push(("guided_grammar", GuidedDecoding::Lark(g.clone())));
    }
    if found.len() > 1 {
        let names: Vec<&str> = found.iter().map(|(n, _)| *n).collect();
        return Err(ApiError::invalid(
            names[1],
            format!(
                "{} each set a constraint; send only one of response_format (json_object or \
                 json_schema), guided_json, guided_regex, guided_choice, guided_grammar",
                names.join(" and ")
            ),
        ));
    }
    Ok(found.pop())
}

/// `{"type": "text" | "json_object" | "json_schema", "json_schema": {name,
/// schema, strict}}`.
fn response_format(rf: &Value) -> Result<Option<GuidedDecoding>, ApiError> {
    let kind = rf.get("type").and_then(Value::as_str).ok_or_else(|| {
        ApiError::invalid(
            "response_format.type",
            "response_format needs a \"type\": \"text\", \"json_object\" or \"json_schema\"",
        )
    })?;
    match kind {
        "text" => Ok(None),
        "json_object" => Ok(Some(GuidedDecoding::JsonObject)),
        "json_schema" => {
            let js = rf.get("json_schema").ok_or_else(|| {
                ApiError::invalid(
                    "response_format.json_schema",
                    "response_format of type \"json_schema\" needs a \"json_schema\" object \
                     with a \"schema\"",
                )
            })?;
            if let Some(name) = js.get("name") {
                let ok = name.as_str().is_some_and(|n| {
                    !n.is_empty()
                        && n.len() <= 64
                        && n.chars()
                            .all(|c| c.is_ascii_alphanumeric() || "_-".contains(c))
                });
                if !ok {
                    return Err(ApiError::invalid(
                        "response_format.json_schema.name",
                        format!(
                            "response_format.json_schema.name must be 1 to 64 characters of \
                             a-z, A-Z, 0-9, _ and -, got {name}"
                        ),
                    ));
                }
            }
            let schema = js.get("schema").cloned().ok_or_else(|| {
                ApiError::invalid(
                    "response_format.json_schema.schema",
                    "response_format.json_schema needs a \"schema\" (a JSON schema object)",
                )
            })?;
            Ok(Some(GuidedDecoding::JsonSchema(schema)))
        }
        other => Err(ApiError::invalid(
            "response_format.type",
            format!(
                "response_format type {other:?} is not supported; use \"text\", \
                 \"json_object\" or \"json_schema\""
            ),
        )),
    }
}

/// vLLM accepts the schema as an object or as JSON text.
fn guided_json(j: &Value) -> Result<Value, ApiError> {
    match j {
        Value::String(s) => serde_json::from_str(s).map_err(|e| {
            ApiError::invalid(
                "guided_json",
                format!("guided_json is a string but not JSON text: {e}"),
            )
        }),
        other => Ok(other.clone()),
    }
}

/// Compiles the request's constraint against the served vocabulary on the
/// blocking pool: the grammar is checked (a 400 naming the request's field
/// when it does not compile) and cached, so the engine's own compile is a
/// clone.
pub async fn check(state: &AppState, validated: &Validated) -> Result<(), ApiError> {
    let Some(spec) = validated.params.guided.clone() else {
        return Ok(());
    };
    let field = validated.guided_field;
    let compiler = state.model.guidance.clone();
    blocking::run(move || {
        compiler.compile(&spec).map(drop).map_err(|e| {
            let message = e.to_string().replacen(e.param(), field, 1);
            ApiError::invalid(field, message)
        })
    })
    .await
}
