//! Stop strings against hand-worked streams and, on random text and chunkings, against the
//! whole-text oracle `text[..min over stops of text.find(stop)]`; the token-level criteria; the
//! OpenAI finish-reason strings.

use kiln_sample::{FinishReason, SamplingError, StopChunk, StopCriteria, StopStrings};
use proptest::prelude::*;

/// Feeds `chunks`; returns everything emitted (including `finish()` if no stop string was hit) and
/// the stop string reported.
fn run(stops: &[&str], chunks: &[&str]) -> (String, Option<String>) {
    let mut m = StopStrings::new(stops.iter().copied()).unwrap();
    let mut out = String::new();
    for c in chunks {
        let r = m.push(c);
        out.push_str(&r.text);
        if r.stop.is_some() {
            return (out, r.stop);
        }
    }
    let r = m.finish();
    out.push_str(&r.text);
    (out, r.stop)
}

fn chars(s: &str) -> Vec<String> {
    s.chars().map(String::from).collect()
}

fn run_chars(stops: &[&str], text: &str) -> (String, Option<String>) {
    let c = chars(text);
    run(stops, &c.iter().map(String::as_str).collect::<Vec<_>>())
}

#[test]
fn stop_inside_one_chunk_cuts_before_it() {
    assert_eq!(run(&["END"], &["hello END world"]), ("hello ".into(), Some("END".into())));
    assert_eq!(run(&["END"], &["END"]), ("".into(), Some("END".into())));
}

#[test]
fn stop_split_across_one_char_chunks() {
    assert_eq!(run_chars(&["END"], "hello END world"), ("hello ".into(), Some("END".into())));
    assert_eq!(run(&["</s>"], &["abc<", "/", "s", "> tail"]), ("abc".into(), Some("</s>".into())));
}

#[test]
fn only_a_possible_prefix_is_held_back() {
    let mut m = StopStrings::new(["world!"]).unwrap();
    assert_eq!(m.push("hello wor").text, "hello ");
    assert_eq!(m.held(), "wor");
    assert_eq!(m.push("ld?").text, "world?"); // not the stop string after all
    assert_eq!(m.held(), "");
    // nothing held when no suffix can start a stop string
    assert_eq!(m.push("abc").text, "abc");
}

#[test]
fn overlapping_prefixes() {
    // "abcabd" in "abcabcabd": the match starts at byte 3.
    assert_eq!(run_chars(&["abcabd"], "abcabcabd"), ("abc".into(), Some("abcabd".into())));
    assert_eq!(run(&["abcabd"], &["abcabcabd"]), ("abc".into(), Some("abcabd".into())));
    assert_eq!(run(&["abcabd"], &["abcab", "cabd"]), ("abc".into(), Some("abcabd".into())));
    // step by step: what is released when
    let mut m = StopStrings::new(["abcabd"]).unwrap();
    let texts: Vec<String> = chars("abcabcabd").iter().map(|c| m.push(c).text).collect();
    assert_eq!(texts, vec!["", "", "", "", "", "abc", "", "", ""]);
    assert!(m.is_done());
}

#[test]
fn multiple_stop_strings_earliest_wins() {
    assert_eq!(run(&["foo", "bar"], &["xxbarfoo"]), ("xx".into(), Some("bar".into())));
    assert_eq!(run_chars(&["foo", "bar"], "xxbarfoo"), ("xx".into(), Some("bar".into())));
    // same start: the shortest is reported (it completes first in a stream)
    assert_eq!(run(&["abc", "ab"], &["xabc"]), ("x".into(), Some("ab".into())));
    assert_eq!(run_chars(&["abc", "ab"], "xabc"), ("x".into(), Some("ab".into())));
}

#[test]
fn a_completed_stop_waits_for_an_earlier_longer_candidate() {
    // "bc" completes at byte 1 while "abcd" (starting at 0) is still possible.
    assert_eq!(run_chars(&["abcd", "bc"], "abcd"), ("".into(), Some("abcd".into())));
    assert_eq!(run_chars(&["abcd", "bc"], "abcX"), ("a".into(), Some("bc".into())));
    // the stream ends while waiting: finish() reports the complete one
    assert_eq!(run_chars(&["abcd", "bc"], "abc"), ("a".into(), Some("bc".into())));
}

#[test]
fn unicode_stop_strings() {
    assert_eq!(run_chars(&["終わり"], "こんにちは終わりです"), ("こんにちは".into(), Some("終わり".into())));
    assert_eq!(run(&["🛑"], &["go ", "🛑", " no"]), ("go ".into(), Some("🛑".into())));
    // "é" and "è" share their first UTF-8 byte; nothing is split or confused
    assert_eq!(run_chars(&["éa"], "èaé"), ("èaé".into(), None));
    let mut m = StopStrings::new(["éa"]).unwrap();
    assert_eq!(m.push("xé").text, "x");
    assert_eq!(m.held(), "é");
    assert_eq!(m.finish(), StopChunk { text: "é".into(), stop: None });
}

#[test]
fn finish_releases_everything_held_and_nothing_after() {
    let mut m = StopStrings::new(["cd"]).unwrap();
    assert_eq!(m.push("abc").text, "ab");
    assert_eq!(m.finish(), StopChunk { text: "c".into(), stop: None });
    assert_eq!(m.finish(), StopChunk::default());
    assert_eq!(m.push("more"), StopChunk::default());
    // after a hit nothing more comes out either
    let mut m = StopStrings::new(["x"]).unwrap();
    assert_eq!(m.push("axb").stop.as_deref(), Some("x"));
    assert_eq!(m.push("ccc"), StopChunk::default());
    assert_eq!(m.finish(), StopChunk::default());
}

#[test]
fn no_stop_strings_pass_everything_through() {
    let mut m = StopStrings::new(Vec::<String>::new()).unwrap();
    assert_eq!(m.push("anything").text, "anything");
    assert_eq!(m.finish().text, "");
}

#[test]
fn empty_stop_string_is_an_error_and_duplicates_are_dropped() {
    assert_eq!(StopStrings::new(["a", ""]).unwrap_err(), SamplingError::EmptyStopString { index: 1 });
    assert_eq!(StopStrings::new(["a", "b", "a"]).unwrap().stops(), ["a", "b"]);
}

#[test]
fn finish_reason_strings() {
    assert_eq!(FinishReason::Stop.as_str(), "stop");
    assert_eq!(FinishReason::StopString("x".into()).as_str(), "stop");
    assert_eq!(FinishReason::Length.as_str(), "length");
    assert_eq!(FinishReason::ContextFull.as_str(), "length");
    assert_eq!(FinishReason::Cancelled.as_str(), "cancelled");
    assert_eq!(FinishReason::Length.to_string(), "length");
}

#[test]
fn criteria_check_tokens() {
    let mut c = StopCriteria::new([2, 9], 3);
    assert_eq!(c.check_token(5, 1), None);
    assert_eq!(c.check_token(9, 1), Some(FinishReason::Stop));
    assert_eq!(c.check_token(5, 3), Some(FinishReason::Length));
    assert_eq!(c.check_token(2, 3), Some(FinishReason::Stop), "EOG wins over the budget");
    c.ignore_eos = true;
    assert_eq!(c.check_token(9, 1), None);
    assert_eq!(c.check_token(9, 3), Some(FinishReason::Length));
    let c = StopCriteria::new([], usize::MAX);
    assert_eq!(c.check_token(0, 1 << 40), None);
}

#[test]
fn criteria_stop_text() {
    let mut c = StopCriteria::new([0], 100);
    c.stop = StopStrings::new(["\n\n"]).unwrap();
    assert_eq!(c.push_text("one\n"), ("one".into(), None));
    assert_eq!(c.push_text("\ntwo"), ("".into(), Some(FinishReason::StopString("\n\n".into()))));
    let mut c = StopCriteria::new([0], 100);
    c.stop = StopStrings::new(["\n\n"]).unwrap();
    assert_eq!(c.push_text("one\n"), ("one".into(), None));
    assert_eq!(c.finish_text(), ("\n".into(), None));
}

// ---------------------------------------------------------------- property: the whole-text oracle

fn piece() -> impl Strategy<Value = String> {
    // a small alphabet with multi-byte characters, so that matches and near-matches are common
    prop::sample::select(vec!["a", "b", "é", "終", "ab"]).prop_map(String::from)
}

fn text_and_chunks() -> impl Strategy<Value = (String, Vec<usize>)> {
    prop::collection::vec(piece(), 0..40).prop_flat_map(|pieces| {
        let text: String = pieces.concat();
        let n_chars = text.chars().count();
        (Just(text), prop::collection::vec(0..=n_chars, 0..30))
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2000, ..ProptestConfig::default() })]

    #[test]
    fn stream_output_equals_text_before_first_stop(
        stops in prop::collection::vec(prop::collection::vec(piece(), 1..4).prop_map(|v| v.concat()), 1..4),
        (text, cuts) in text_and_chunks(),
    ) {
        // chunk the text at the chosen character positions
        let bounds: Vec<usize> = text.char_indices().map(|(i, _)| i).chain([text.len()]).collect();
        let mut cut_bytes: Vec<usize> = cuts.iter().map(|&c| bounds[c]).collect();
        cut_bytes.extend([0, text.len()]);
        cut_bytes.sort_unstable();
        cut_bytes.dedup();
        let chunks: Vec<&str> = cut_bytes.windows(2).map(|w| &text[w[0]..w[1]]).collect();

        let mut m = StopStrings::new(stops.iter().cloned()).unwrap();
        let mut out = String::new();
        let mut hit = None;
        for c in &chunks {
            let r = m.push(c);
            out.push_str(&r.text);
            if r.stop.is_some() {
                hit = r.stop;
                break;
            }
            // invariant: what is held is empty or a proper prefix of some stop string
            let held = m.held();
            prop_assert!(held.is_empty() || stops.iter().any(|s| s.len() > held.len() && s.starts_with(held)), "held {:?}", held);
        }
        if hit.is_none() {
            let r = m.finish();
            out.push_str(&r.text);
            hit = r.stop;
        }

        // the oracle: str::find over the whole text
        let first = stops.iter().filter_map(|s| text.find(s.as_str())).min();
        match first {
            None => {
                prop_assert_eq!(&out, &text);
                prop_assert_eq!(hit, None);
            }
            Some(pos) => {
                prop_assert_eq!(&out, &text[..pos]);
                let shortest = stops.iter().filter(|s| text[pos..].starts_with(s.as_str())).min_by_key(|s| s.len()).cloned();
                prop_assert_eq!(hit, shortest);
            }
        }
    }
}
