use serde_json::json;

use super::*;
use crate::rag::fusion::{Fused, Source};
use crate::rag::index::ChunkRec;

fn msg(role: Role, text: &str) -> ChatMessage {
    message(role, text.to_string())
}

fn hit(doc: &str, position: usize, text: &str, score: f32) -> Hit {
    Hit {
        chunk: ChunkRec {
            doc_id: doc.into(),
            position,
            start_byte: 0,
            text: text.into(),
        },
        metadata: json!({}).as_object().unwrap().clone(),
        fused: Fused {
            slot: 0,
            score,
            dense_score: score,
            sparse_score: 0.0,
            source: Source::DenseOnly,
        },
    }
}

#[test]
fn the_query_is_the_user_messages_after_the_last_assistant() {
    let m = [
        msg(Role::System, "sys"),
        msg(Role::User, "old question"),
        msg(Role::Assistant, "answer"),
        msg(Role::User, "part one"),
        msg(Role::User, "part two"),
    ];
    let (history, query) = split_query(&m);
    assert_eq!(query, "part one\n\npart two");
    assert_eq!(history.len(), 3);
    let (history, query) = split_query(&m[..2]);
    assert_eq!((history.len(), query.as_str()), (1, "old question"));
    assert_eq!(split_query(&m[..3]).1, "");
}

#[test]
fn the_budget_is_kaitos_formula() {
    // ratio × min(max_tokens or context, context − query − 150)
    assert_eq!(context_budget(4096, 46, None, 0.5), 1950);
    assert_eq!(context_budget(4096, 46, Some(1000), 0.5), 500);
    assert_eq!(context_budget(4096, 46, Some(100_000), 0.2), 780);
    assert_eq!(context_budget(100, 200, None, 0.5), 0);
}

#[test]
fn selection_keeps_similar_chunks_that_fit_best_first() {
    let hits = vec![
        hit("a", 0, "one two three", 0.9),
        hit("b", 0, "four five six seven eight", 0.8),
        hit("c", 0, "nine", 0.7),
        hit("d", 0, "ten", 0.1),
    ];
    let count = |s: &str| s.split_whitespace().count();
    let chosen = select(hits, 5, 0.5, count);
    let docs: Vec<&str> = chosen.iter().map(|h| h.chunk.doc_id.as_str()).collect();
    // b does not fit after a; d is below the cutoff.
    assert_eq!(docs, vec!["a", "c"]);
}

#[test]
fn stable_order_puts_the_system_prompt_first_and_sorts_chunks() {
    let chosen = vec![
        hit("b", 0, "B0", 0.9),
        hit("a", 1, "A1", 0.8),
        hit("a", 0, "A0", 0.7),
    ];
    let history = vec![
        msg(Role::System, "You are kind."),
        msg(Role::User, "earlier"),
    ];
    let out = assemble(history.clone(), "q".into(), &chosen, PromptOrder::Stable);
    let sys = text_of(&out[0]);
    assert!(sys.starts_with("You are kind.\n\n"), "{sys}");
    let (a0, a1, b0) = (
        sys.find("A0").unwrap(),
        sys.find("A1").unwrap(),
        sys.find("B0").unwrap(),
    );
    assert!(a0 < a1 && a1 < b0, "{sys}");
    assert_eq!(out.len(), 3);
    assert_eq!(out[1].role, Role::User);
    assert_eq!(text_of(&out[2]), "q");
    // Reordered hits give the very same prompt.
    let mut shuffled = chosen.clone();
    shuffled.reverse();
    let again = assemble(history.clone(), "q".into(), &shuffled, PromptOrder::Stable);
    assert_eq!(text_of(&again[0]), sys);
    // KAITO's order: context (by relevance) before the system prompt.
    let kaito = assemble(history, "q".into(), &chosen, PromptOrder::Kaito);
    let ksys = text_of(&kaito[0]);
    assert!(
        ksys.starts_with(CONTEXT_HEADER) && ksys.ends_with("You are kind."),
        "{ksys}"
    );
    assert!(ksys.find("B0").unwrap() < ksys.find("A0").unwrap());
}

#[test]
fn without_a_system_prompt_the_context_is_the_system_message() {
    let out = assemble(
        vec![],
        "q".into(),
        &[hit("a", 0, "A0", 0.9)],
        PromptOrder::Stable,
    );
    assert_eq!(out[0].role, Role::System);
    assert!(text_of(&out[0]).starts_with(CONTEXT_HEADER));
}
