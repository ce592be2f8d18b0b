//! Chat completions with `index_name`, as KAITO's RAGEngine does them:
//! the user messages since the last assistant message (joined by a blank
//! line) are the query; chunks less similar than the cutoff are dropped;
//! the rest fill ratio × min(max_tokens or context, context − query − 150)
//! tokens of the served model's tokenizer, best first.
//!
//! The prompt differs from KAITO's on purpose (see docs/rag.md): the
//! user's system prompt comes first, then the chosen chunks in a stable
//! order (doc_id, then position), then the conversation, so the same
//! documents give the same prefix and its KV blocks are reused.

use std::sync::Arc;
use std::time::Instant;

use super::chat_template::{ChatMessage, Content, Role};
use super::errors::ApiError;
use super::rag_errors::openai_error;
use super::{blocking, AppState};
use crate::rag::index::Hit;
use crate::rag::metrics::Route;
use crate::rag::service::PromptOrder;
use crate::rag::types::NodeWithScore;
use crate::rag::RagService;

/// KAITO's `ADDITION_PROMPT_TOKENS`: room for the context template.
pub const TEMPLATE_TOKENS: i64 = 150;
pub const DEFAULT_CONTEXT_TOKEN_RATIO: f64 = 0.5;
/// How many chunks are considered before the budget picks (KAITO: ≥ 100).
const CANDIDATES: usize = 100;

const CONTEXT_HEADER: &str = "Use the following documents to answer the user's question. \
If they do not hold the answer, say that you do not know.\n\n";
const CHUNK_SEPARATOR: &str = "\n\n---\n\n";

/// The RAG fields of a chat request.
pub struct RagRequest<'a> {
    pub index_name: &'a str,
    pub context_token_ratio: Option<f64>,
    /// The request's validated `max_tokens` (or `max_completion_tokens`).
    pub max_tokens: Option<usize>,
    pub messages: &'a [ChatMessage],
    /// Choices asked for (validated).
    pub n: usize,
    pub has_functions: bool,
}

/// What the chat handler generates from instead of the request's messages.
pub struct Prepared {
    pub messages: Vec<ChatMessage>,
    pub sources: Sources,
}

/// The chunks a RAG chat put into its prompt, and the `rag_chat_*` timer.
pub struct Sources {
    /// `None` when nothing was retrieved (then the messages are the request's).
    nodes: Option<Vec<NodeWithScore>>,
    timer: ChatTimer,
}

impl Sources {
    /// The chat is answered: records success, gives the chunks.
    pub fn answered(self) -> Option<Vec<NodeWithScore>> {
        self.timer.ok();
        self.nodes
    }
}

/// Records `rag_chat_*` when dropped: success only if [`ChatTimer::ok`] ran.
struct ChatTimer {
    rag: Arc<RagService>,
    start: Instant,
    ok: bool,
}

impl ChatTimer {
    fn ok(mut self) {
        self.ok = true;
    }
}

impl Drop for ChatTimer {
    fn drop(&mut self) {
        self.rag
            .metrics
            .on_route(Route::Chat, self.ok, self.start.elapsed().as_secs_f64());
    }
}

pub fn text_of(m: &ChatMessage) -> String {
    match &m.content {
        None => String::new(),
        Some(Content::Text(t)) => t.clone(),
        Some(Content::Parts(parts)) => parts
            .iter()
            .filter(|p| p.kind == "text")
            .filter_map(|p| p.text.clone())
            .collect::<Vec<_>>()
            .join("\n"),
    }
}

fn message(role: Role, text: String) -> ChatMessage {
    ChatMessage::text(role, text)
}

/// KAITO's split: (earlier messages, the user messages since the last
/// assistant message joined by a blank line).
pub fn split_query(messages: &[ChatMessage]) -> (Vec<ChatMessage>, String) {
    let last_assistant = messages.iter().rposition(|m| m.role == Role::Assistant);
    let mut history = Vec::new();
    let mut query = Vec::new();
    for (i, m) in messages.iter().enumerate() {
        if m.role == Role::User && last_assistant.is_none_or(|a| i > a) {
            query.push(text_of(m));
        } else {
            history.push(m.clone());
        }
    }
    (history, query.join("\n\n"))
}

/// Tokens of context allowed: ratio × min(max_tokens or context,
/// context − query − 150), never negative.
pub fn context_budget(
    context: usize,
    query_tokens: usize,
    max_tokens: Option<usize>,
    ratio: f64,
) -> usize {
    let context = context as i64;
    let room = context - query_tokens as i64 - TEMPLATE_TOKENS;
    let avail = max_tokens.map_or(context, |m| m as i64).min(room);
    ((avail as f64) * ratio).floor().max(0.0) as usize
}

/// Best-first hits within the similarity cutoff that fit the budget.
pub fn select(
    hits: Vec<Hit>,
    budget: usize,
    min_similarity: f32,
    count: impl Fn(&str) -> usize,
) -> Vec<Hit> {
    let mut left = budget;
    let mut chosen = Vec::new();
    for h in hits {
        if h.fused.dense_score < min_similarity {
            continue;
        }
        let n = count(&h.chunk.text);
        if n > left {
            continue;
        }
        left -= n;
        chosen.push(h);
    }
    chosen
}

/// The messages to generate from, with the chunks placed per `order`.
pub fn assemble(
    history: Vec<ChatMessage>,
    query: String,
    chosen: &[Hit],
    order: PromptOrder,
) -> Vec<ChatMessage> {
    let mut chunks: Vec<&Hit> = chosen.iter().collect();
    if order == PromptOrder::Stable {
        chunks.sort_by(|a, b| {
            (&a.chunk.doc_id, a.chunk.position).cmp(&(&b.chunk.doc_id, b.chunk.position))
        });
    }
    let context = format!(
        "{CONTEXT_HEADER}{}",
        chunks
            .iter()
            .map(|h| h.chunk.text.as_str())
            .collect::<Vec<_>>()
            .join(CHUNK_SEPARATOR)
    );
    let mut rest = history.into_iter().peekable();
    let user_system = rest
        .next_if(|m| matches!(m.role, Role::System | Role::Developer))
        .map(|m| text_of(&m));
    let system = match (order, user_system) {
        (_, None) => context,
        (PromptOrder::Stable, Some(s)) => format!("{s}\n\n{context}"),
        (PromptOrder::Kaito, Some(s)) => format!("{context}\n\n{s}"),
    };
    let mut out = vec![message(Role::System, system)];
    out.extend(rest);
    out.push(message(Role::User, query));
    out
}

/// Retrieves and assembles; errors carry KAITO's statuses in OpenAI shape.
pub async fn prepare(state: &AppState, req: RagRequest<'_>) -> Result<Prepared, ApiError> {
    let rag = state.rag.clone().ok_or_else(|| {
        ApiError::invalid(
            "index_name",
            "RAG is off on this server (started with --no-rag)",
        )
    })?;
    let timer = ChatTimer {
        rag: rag.clone(),
        start: Instant::now(),
        ok: false,
    };
    if req.has_functions {
        return Err(ApiError::invalid(
            "functions",
            "tools and functions are not supported.",
        ));
    }
    if req.n > 1 {
        return Err(ApiError::invalid("n", "n > 1 is not supported."));
    }
    let ratio = req
        .context_token_ratio
        .unwrap_or(DEFAULT_CONTEXT_TOKEN_RATIO);
    if !(0.2..=0.8).contains(&ratio) {
        return Err(ApiError::invalid(
            "context_token_ratio",
            format!("Invalid context_token_ratio: {ratio}. Must be between 0.2 and 0.8."),
        ));
    }
    let (history, query) = split_query(req.messages);
    if query.trim().is_empty() {
        return Err(ApiError::invalid(
            "messages",
            "There must be a user prompt since the latest assistant message.",
        ));
    }
    let hits = rag
        .retrieve(req.index_name, &query, CANDIDATES, None)
        .await
        .map_err(|e| openai_error(e, "index_name"))?;
    // Counting the query's and every candidate's tokens: the blocking pool's work.
    let tokenizer = state.model.tokenizer.clone();
    let (context, max_tokens) = (state.model.max_model_len, req.max_tokens);
    let min_similarity = rag.chat.min_similarity;
    let (chosen, query) = blocking::run(move || {
        let count = |s: &str| {
            tokenizer
                .encode(s, false)
                .map(|t| t.len())
                .unwrap_or(usize::MAX)
        };
        let budget = context_budget(context, count(&query), max_tokens, ratio);
        Ok((select(hits, budget, min_similarity, count), query))
    })
    .await?;
    if chosen.is_empty() {
        return Ok(Prepared {
            messages: req.messages.to_vec(),
            sources: Sources { nodes: None, timer },
        });
    }
    let nodes = chosen.iter().map(Hit::to_node).collect();
    Ok(Prepared {
        messages: assemble(history, query, &chosen, rag.chat.prompt_order),
        sources: Sources {
            nodes: Some(nodes),
            timer,
        },
    })
}

#[cfg(test)]
#[path = "rag_chat_tests.rs"]
mod tests;
