//! Stop strings over streamed deltas: matches across delta boundaries, no
//! text that may start a stop reaches the client early, the stop (and what
//! follows) is cut off, and the result does not depend on how text was split.

use proptest::prelude::*;
use tandem_engine::stop::{validate, StopError, StopMatcher, StopOutcome, MAX_STOP_STRINGS};

fn matcher(stops: &[&str], include: bool) -> StopMatcher {
    StopMatcher::new(stops.iter().map(|s| s.to_string()).collect(), include).unwrap()
}

/// Feeds `deltas`; returns what each push released, the final flush, and
/// the stop that fired.
fn run(m: &mut StopMatcher, deltas: &[&str]) -> (Vec<String>, String, Option<String>) {
    let mut released = Vec::new();
    let mut stopped = None;
    for d in deltas {
        let StopOutcome {
            release,
            stopped: s,
        } = m.push(d);
        released.push(release);
        if s.is_some() {
            assert!(stopped.is_none(), "stopped twice");
            stopped = s;
        }
    }
    (released, m.flush(), stopped)
}

#[test]
fn stop_spanning_deltas_is_found_and_cut() {
    let mut m = matcher(&["STOP"], false);
    let (released, tail, stopped) = run(&mut m, &["Hello S", "T", "OP and more", "ignored"]);
    assert_eq!(released, ["Hello ", "", "", ""]);
    assert_eq!(tail, "");
    assert_eq!(stopped.as_deref(), Some("STOP"));
    assert!(m.is_stopped());

    let mut m = matcher(&["\n\nUser:"], false);
    let (released, _, stopped) = run(&mut m, &["fine.\n", "\nUs", "er: hi"]);
    assert_eq!(released.concat(), "fine.");
    assert_eq!(stopped.as_deref(), Some("\n\nUser:"));
}

#[test]
fn false_start_is_released_once_disambiguated() {
    let mut m = matcher(&["STOP"], false);
    let (released, tail, stopped) = run(&mut m, &["a ST", "ART", " then STO"]);
    assert_eq!(released, ["a ", "START", " then "]);
    assert_eq!(tail, "STO", "held text that never became a stop is flushed");
    assert_eq!(stopped, None);
}

#[test]
fn overlapping_self_prefix() {
    // "aab" with stop "ab": the first 'a' is released, the match starts at 1.
    let mut m = matcher(&["ab"], false);
    let (released, _, stopped) = run(&mut m, &["a", "a", "b"]);
    assert_eq!(released, ["", "a", ""]);
    assert_eq!(stopped.as_deref(), Some("ab"));

    let mut m = matcher(&["abab"], false);
    let (released, _, stopped) = run(&mut m, &["aba", "bab"]);
    assert_eq!(released.concat(), "");
    assert_eq!(stopped.as_deref(), Some("abab"));

    let mut m = matcher(&["abac"], false);
    let (released, _, stopped) = run(&mut m, &["xaba", "bac!"]);
    assert_eq!(released.concat(), "xab");
    assert_eq!(stopped.as_deref(), Some("abac"));
}

#[test]
fn one_stop_a_prefix_of_another() {
    // The shorter completes first, whatever the deltas.
    for deltas in [&["x ab", "c"][..], &["x abc"], &["x a", "b", "c"]] {
        let mut m = matcher(&["abc", "ab"], false);
        let (released, _, stopped) = run(&mut m, deltas);
        assert_eq!(released.concat(), "x ");
        assert_eq!(stopped.as_deref(), Some("ab"), "{deltas:?}");
    }
    // The one that ends first wins, even if another started earlier...
    let mut m = matcher(&["abcd", "bc"], false);
    let (released, _, stopped) = run(&mut m, &["xabcd"]);
    assert_eq!(
        (released.concat(), stopped.as_deref()),
        ("xa".into(), Some("bc"))
    );
    // ...and on a tie the longest, so no piece of a stop leaks.
    let mut m = matcher(&["bc", "abc"], false);
    let (released, _, stopped) = run(&mut m, &["xab", "c"]);
    assert_eq!(
        (released.concat(), stopped.as_deref()),
        ("x".into(), Some("abc"))
    );
}

#[test]
fn include_stop_str_in_output() {
    let mut m = matcher(&["</answer>"], true);
    let (released, _, stopped) = run(&mut m, &["42</ans", "wer> trailing"]);
    assert_eq!(released, ["42", "</answer>"]);
    assert_eq!(stopped.as_deref(), Some("</answer>"));
}

#[test]
fn unicode_stops_hold_whole_characters() {
    let mut m = matcher(&["。\n", "🛑"], false);
    let (released, _, stopped) = run(&mut m, &["你好。", "世界。", "\n再见"]);
    assert_eq!(released, ["你好", "。世界", ""]);
    assert_eq!(stopped.as_deref(), Some("。\n"));

    // A stop sharing a first byte (not a first character) with the text:
    // "é" is C3 A9, "ê" is C3 AA. Nothing may be cut inside a character.
    let mut m = matcher(&["ê!"], false);
    let (released, tail, stopped) = run(&mut m, &["caf", "é", "ê", "ê?"]);
    assert_eq!(released, ["caf", "é", "", "êê?"]);
    assert_eq!((tail.as_str(), stopped), ("", None));
}

#[test]
fn no_stops_passes_text_through() {
    let mut m = matcher(&[], false);
    let (released, tail, stopped) = run(&mut m, &["a", "bc", ""]);
    assert_eq!(released, ["a", "bc", ""]);
    assert_eq!((tail.as_str(), stopped), ("", None));
}

#[test]
fn validation_names_the_stop_field() {
    let owned = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
    assert_eq!(validate(&owned(&["a", "b", "c", "d"])), Ok(()));
    let too_many = validate(&owned(&["a"; MAX_STOP_STRINGS + 1])).unwrap_err();
    assert_eq!(too_many, StopError::TooMany { count: 5 });
    let empty = StopMatcher::new(owned(&["ok", ""]), false).unwrap_err();
    assert_eq!(empty, StopError::Empty { index: 1 });
    for e in [too_many, empty] {
        assert_eq!(e.param(), "stop");
        assert!(e.to_string().contains("`stop"), "{e}");
    }
}

/// Reference: the stop occurrence that ends first (longest on a tie).
fn reference(text: &str, stops: &[String], include: bool) -> (String, Option<String>) {
    let first = stops
        .iter()
        .filter_map(|s| text.find(s.as_str()).map(|at| (at + s.len(), at, s)))
        .min_by_key(|&(end, at, _)| (end, at));
    match first {
        None => (text.to_string(), None),
        Some((end, at, s)) => {
            let cut = if include { end } else { at };
            (text[..cut].to_string(), Some(s.clone()))
        }
    }
}

/// Text and stops over a small alphabet (with multi-byte characters) so that
/// matches and near-misses are common; cut points are character indices.
fn case() -> impl Strategy<Value = (String, Vec<String>, Vec<usize>)> {
    let ch = prop_oneof![
        4 => Just('a'),
        4 => Just('b'),
        1 => prop::sample::select(vec!['é', 'ê', '中', '🙂', '\n']),
    ];
    let text = prop::collection::vec(ch.clone(), 0..40).prop_map(String::from_iter);
    let stop = prop::collection::vec(ch, 1..5).prop_map(String::from_iter);
    let stops = prop::collection::vec(stop, 0..=MAX_STOP_STRINGS);
    (text, stops, prop::collection::vec(0usize..40, 0..8))
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(1000))]

    #[test]
    fn released_text_is_the_text_cut_at_the_first_stop(
        (text, stops, cuts) in case(),
        include in any::<bool>(),
    ) {
        let mut bounds: Vec<usize> = text.char_indices().map(|(i, _)| i).collect();
        bounds.push(text.len());
        let mut at: Vec<usize> = cuts.iter().map(|c| bounds[c % bounds.len()]).collect();
        at.extend([0, text.len()]);
        at.sort_unstable();
        let deltas: Vec<&str> = at.windows(2).map(|w| &text[w[0]..w[1]]).collect();

        let mut m = StopMatcher::new(stops.clone(), include).unwrap();
        let (released, tail, stopped) = run(&mut m, &deltas);
        let (want, want_stop) = reference(&text, &stops, include);
        prop_assert_eq!(released.concat() + &tail, want);
        prop_assert_eq!(stopped, want_stop);
        // Held text never exceeds what a stop prefix needs.
        let longest = stops.iter().map(String::len).max().unwrap_or(0);
        prop_assert!(tail.len() < longest.max(1));
    }
}
