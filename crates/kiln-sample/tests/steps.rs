//! Each step against hand-worked examples, and against a straightforward f64 reimplementation
//! written here (full sorts, std `exp`), on random inputs.

use kiln_sample::steps::{self, Candidates, TokenCounts};
use proptest::prelude::*;

fn ids(c: &Candidates) -> Vec<u32> {
    c.ids().collect()
}

fn sorted_ids(c: &Candidates) -> Vec<u32> {
    let mut v = ids(c);
    v.sort_unstable();
    v
}

fn close(a: f32, b: f64) -> bool {
    (a as f64 - b).abs() <= 1e-6 * (1.0 + b.abs())
}

// ---------------------------------------------------------------- hand-worked examples

#[test]
fn top_k_keeps_the_two_largest() {
    // logits [1,2,3,4], k=2 → ids 3 (logit 4) then 2 (logit 3).
    let mut c = Candidates::from_logits(&[1.0, 2.0, 3.0, 4.0]);
    steps::top_k(&mut c, 2);
    assert_eq!(ids(&c), vec![3, 2]);
    assert_eq!(c.logit_of(3), Some(4.0));
    assert_eq!(c.logit_of(2), Some(3.0));
}

#[test]
fn top_k_ties_go_to_lower_ids_and_off_values_do_nothing() {
    let mut c = Candidates::from_logits(&[5.0, 1.0, 5.0, 5.0]);
    steps::top_k(&mut c, 2);
    assert_eq!(ids(&c), vec![0, 2]);

    for k in [0, 4, 10] {
        let mut c = Candidates::from_logits(&[1.0, 3.0, 2.0, 0.0]);
        steps::top_k(&mut c, k);
        assert_eq!(ids(&c), vec![0, 1, 2, 3], "k = {k}");
    }
}

#[test]
fn top_p_keeps_the_smallest_prefix_reaching_p() {
    // probabilities by id: [0.10, 0.50, 0.15, 0.25]; sorted: 1 (0.50), 3 (0.25), 2 (0.15), 0 (0.10)
    // cumulative: 0.50, 0.75, 0.90, 1.00. The kept ids stay in list order.
    let logits: Vec<f32> = [0.10f64, 0.50, 0.15, 0.25].iter().map(|p| p.ln() as f32).collect();
    let cases: [(f32, &[u32]); 6] = [
        (0.0, &[1]),
        (0.3, &[1]),
        (0.6, &[1, 3]),
        (0.8, &[1, 2, 3]),
        (0.95, &[0, 1, 2, 3]),
        (1.0, &[0, 1, 2, 3]), // off
    ];
    for (p, want) in cases {
        let mut c = Candidates::from_logits(&logits);
        steps::top_p(&mut c, p);
        assert_eq!(ids(&c), want, "top_p = {p}");
    }
    // the same tokens in another order keep that order
    let mut c = Candidates::from_pairs([(3, logits[3]), (0, logits[0]), (2, logits[2]), (1, logits[1])]);
    steps::top_p(&mut c, 0.8);
    assert_eq!(ids(&c), vec![3, 2, 1]);
}

#[test]
fn top_p_ties_at_the_cut_go_to_lower_ids() {
    // ids 1, 2, 4, 6 have logit 2 (weight 1), ids 0, 3, 5, 7 logit -1 (weight e^-3 ≈ 0.05):
    // total ≈ 4.2, and p = 0.6 needs 2.52 → three of the four tied tokens, the lowest ids 1, 2, 4
    // (the list is given in reverse id order, which the result keeps).
    let l = [-1.0f32, 2.0, 2.0, -1.0, 2.0, -1.0, 2.0, -1.0];
    let mut c = Candidates::from_pairs([7, 6, 5, 4, 3, 2, 1, 0].map(|i| (i, l[i as usize])));
    steps::top_p(&mut c, 0.6);
    assert_eq!(ids(&c), vec![4, 2, 1]);
}

#[test]
fn top_p_on_a_flat_vocabulary_breaks_ties_by_id() {
    // 1000 equal logits: every weight is exactly 1, so p = 0.5 needs exactly 500 tokens, and ties
    // go to the lowest ids (all of them in one histogram bucket, which gets sorted).
    let mut c = Candidates::from_logits(&vec![0.25f32; 1000]);
    steps::top_p(&mut c, 0.5);
    assert_eq!(ids(&c), (0..500).collect::<Vec<u32>>());

    let mut c = Candidates::from_logits(&vec![0.25f32; 1000]);
    steps::top_p(&mut c, 0.7);
    assert_eq!(ids(&c), (0..700).collect::<Vec<u32>>());
}

#[test]
fn min_p_is_relative_to_the_most_likely_token() {
    // logits [2, 1, 0, -1]: p_i / p_max = 1, e^-1 = 0.368, e^-2 = 0.135, e^-3 = 0.050
    let cases: [(f32, &[u32]); 5] =
        [(0.0, &[0, 1, 2, 3]), (0.04, &[0, 1, 2, 3]), (0.1, &[0, 1, 2]), (0.3, &[0, 1]), (0.4, &[0])];
    for (p, want) in cases {
        let mut c = Candidates::from_logits(&[2.0, 1.0, 0.0, -1.0]);
        steps::min_p(&mut c, p);
        assert_eq!(ids(&c), want, "min_p = {p}");
    }
    // min_p = 1 keeps only the maxima (all of them on a tie).
    let mut c = Candidates::from_logits(&[3.0, 1.0, 3.0]);
    steps::min_p(&mut c, 1.0);
    assert_eq!(ids(&c), vec![0, 2]);
}

#[test]
fn penalties_on_a_known_history() {
    // logits [2, -1, 0.5, 3, 0]; history [0, 1, 1, 4, 0, 0] → counts {0: 3, 1: 2, 4: 1}
    // repeat 2, frequency 0.1, presence 0.5:
    //   id 0:  2 / 2 = 1     − (3·0.1 + 0.5) =  0.2
    //   id 1: −1 · 2 = −2    − (2·0.1 + 0.5) = −2.7
    //   id 2, id 3: not in the history: 0.5, 3
    //   id 4:  0 · 2 = 0     − (1·0.1 + 0.5) = −0.6
    let logits = [2.0, -1.0, 0.5, 3.0, 0.0];
    let history = [0, 1, 1, 4, 0, 0];
    let want_all = [0.2, -2.7, 0.5, 3.0, -0.6];
    // last 3 tokens only: [4, 0, 0] → counts {0: 2, 4: 1}:
    //   id 0: 1 − (0.2 + 0.5) = 0.3; id 1 untouched: −1
    let want_last3 = [0.3, -1.0, 0.5, 3.0, -0.6];
    for (last_n, want) in [(-1, want_all), (6, want_all), (100, want_all), (3, want_last3)] {
        let counts = TokenCounts::from_history(&history, last_n);
        let mut c = Candidates::from_logits(&logits);
        steps::penalties(&mut c, &counts, 2.0, 0.1, 0.5);
        for (id, &w) in want.iter().enumerate() {
            let got = c.logit_of(id as u32).unwrap();
            assert!(close(got, w), "last_n {last_n} id {id}: {got} vs {w}");
        }
    }
    // last_n = 0: nothing counted, nothing changes.
    let counts = TokenCounts::from_history(&history, 0);
    assert!(counts.is_empty());
    let mut c = Candidates::from_logits(&logits);
    steps::penalties(&mut c, &counts, 2.0, 0.1, 0.5);
    assert_eq!(c, Candidates::from_logits(&logits));
}

#[test]
fn penalties_on_a_shuffled_partial_list_match_the_dense_path() {
    // The same tokens as above, given as (id, logit) pairs out of order and with id 3 missing;
    // history also names id 9, which is not a candidate.
    let history = [0, 1, 1, 4, 0, 0, 9];
    let counts = TokenCounts::from_history(&history, -1);
    assert_eq!(counts.iter().collect::<Vec<_>>(), vec![(0, 3), (1, 2), (4, 1), (9, 1)]);
    let mut c = Candidates::from_pairs([(4, 0.0), (2, 0.5), (0, 2.0), (1, -1.0)]);
    steps::penalties(&mut c, &counts, 2.0, 0.1, 0.5);
    assert_eq!(ids(&c), vec![4, 2, 0, 1]);
    for (id, w) in [(4, -0.6), (2, 0.5), (0, 0.2), (1, -2.7)] {
        assert!(close(c.logit_of(id).unwrap(), w), "id {id}");
    }
}

#[test]
fn repeat_penalty_below_one_and_overflow_stay_finite() {
    // penalty 0.5 doubles a positive logit: f32::MAX / 0.5 overflows and is clamped to f32::MAX.
    let counts = TokenCounts::from_history(&[0, 1], -1);
    let mut c = Candidates::from_logits(&[f32::MAX, -2.0]);
    steps::penalties(&mut c, &counts, 0.5, 0.0, 0.0);
    assert_eq!(c.logit_of(0), Some(f32::MAX));
    assert_eq!(c.logit_of(1), Some(-1.0));
}

#[test]
fn temperature_shifts_by_the_max_and_scales() {
    let logits = |c: &Candidates| c.as_slice().iter().map(|x| x.logit).collect::<Vec<_>>();
    // [1, 2, -4], max 2: ((1-2)/0.5, 0, (-4-2)/0.5) = (-2, 0, -12)
    let mut c = Candidates::from_logits(&[1.0, 2.0, -4.0]);
    steps::temperature(&mut c, 0.5);
    assert_eq!(logits(&c), vec![-2.0, 0.0, -12.0]);
    // t = 4: (-0.25, 0, -1.5); -inf stays -inf
    let mut c = Candidates::from_logits(&[1.0, 2.0, -4.0, f32::NEG_INFINITY]);
    steps::temperature(&mut c, 4.0);
    assert_eq!(logits(&c), vec![-0.25, 0.0, -1.5, f32::NEG_INFINITY]);
    // t = 1 changes nothing
    let mut c = Candidates::from_logits(&[1.0, 2.0, -4.0]);
    steps::temperature(&mut c, 1.0);
    assert_eq!(logits(&c), vec![1.0, 2.0, -4.0]);
    // a tiny temperature keeps the order instead of overflowing both to +inf
    let mut c = Candidates::from_logits(&[1.0, 2.0, 2.0]);
    steps::temperature(&mut c, 1e-40);
    assert_eq!(logits(&c), vec![f32::NEG_INFINITY, 0.0, 0.0]);
    assert_eq!(steps::softmax(&c), vec![0.0, 0.5, 0.5]);

    for t in [0.0, -1.0] {
        let mut c = Candidates::from_logits(&[1.0, 2.0, 2.0, -4.0]);
        steps::temperature(&mut c, t);
        assert_eq!(ids(&c), vec![1], "t = {t}");
    }
}

#[test]
fn softmax_matches_hand_values() {
    // logits ln(0.2), ln(0.3), ln(0.5) → probabilities 0.2, 0.3, 0.5
    let c = Candidates::from_logits(&[0.2f32.ln(), 0.3f32.ln(), 0.5f32.ln()]);
    let p = steps::softmax(&c);
    for (got, want) in p.iter().zip([0.2, 0.3, 0.5]) {
        assert!((got - want).abs() < 1e-6, "{got} vs {want}");
    }
    // all -inf: uniform
    let c = Candidates::from_logits(&[f32::NEG_INFINITY; 4]);
    assert_eq!(steps::softmax(&c), vec![0.25; 4]);
}

#[test]
fn draw_is_the_inverse_cdf() {
    // probabilities [0.2, 0.3, 0.5]: CDF 0.2, 0.5, 1.0
    let c = Candidates::from_logits(&[0.2f32.ln(), 0.3f32.ln(), 0.5f32.ln()]);
    for (u, want) in [(0.0, 0), (0.1, 0), (0.19, 0), (0.21, 1), (0.49, 1), (0.51, 2), (0.999_999, 2)] {
        assert_eq!(steps::draw(&c, u), Some(want), "u = {u}");
    }
    // out-of-range u is clamped rather than trusted
    assert_eq!(steps::draw(&c, -3.0), Some(0));
    assert_eq!(steps::draw(&c, 1.0), Some(2));
    assert_eq!(steps::draw(&c, 7.0), Some(2));
    assert_eq!(steps::draw(&c, f64::NAN), Some(0));
}

#[test]
fn draw_never_picks_impossible_tokens() {
    let c = Candidates::from_logits(&[f32::NEG_INFINITY, 0.0, f32::NAN, f32::NEG_INFINITY]);
    for u in [0.0, 0.3, 0.999_999_999] {
        assert_eq!(steps::draw(&c, u), Some(1));
    }
    // a weight that underflows to 0 (logit 2000 below the max) is impossible too
    let c = Candidates::from_logits(&[-2000.0, 0.0, -2000.0]);
    assert_eq!(steps::draw(&c, 0.0), Some(1));
    assert_eq!(steps::draw(&c, 1.0), Some(1));
}

#[test]
fn greedy_ties_nan_and_infinities() {
    let g = |l: &[f32]| steps::greedy(&Candidates::from_logits(l));
    assert_eq!(g(&[1.0, 3.0, 3.0, 2.0]), Some(1));
    assert_eq!(g(&[f32::NAN, 1.0, f32::NAN]), Some(1));
    assert_eq!(g(&[f32::NAN, f32::NAN]), Some(0));
    assert_eq!(g(&[f32::NEG_INFINITY; 5]), Some(0));
    assert_eq!(g(&[1.0, f32::INFINITY, f32::INFINITY]), Some(1));
    assert_eq!(g(&[-0.0, 0.0]), Some(0)); // -0 == 0: a tie
    assert_eq!(g(&[]), None);
    // partial lists: ties go to the lowest id, not the first position
    let c = Candidates::from_pairs([(7, 2.0), (3, 2.0), (5, 1.0)]);
    assert_eq!(steps::greedy(&c), Some(3));
}

#[test]
fn steps_on_degenerate_lists_do_not_panic() {
    let all_neg_inf = [f32::NEG_INFINITY; 10];
    for logits in [&[][..], &[f32::NAN][..], &all_neg_inf[..]] {
        let mut c = Candidates::from_logits(logits);
        let counts = TokenCounts::from_history(&[0, 0, 3], -1);
        steps::penalties(&mut c, &counts, 1.3, 0.2, 0.1);
        steps::top_k(&mut c, 3);
        steps::top_p(&mut c, 0.5);
        steps::min_p(&mut c, 0.5);
        steps::temperature(&mut c, 0.7);
        let d = steps::draw(&c, 0.5);
        assert_eq!(d, if logits.is_empty() { None } else { Some(0) });
    }
}

// ---------------------------------------------------------------- f64 reference implementations

fn sane(x: f32) -> f64 {
    if x.is_nan() {
        f64::NEG_INFINITY
    } else if x == f32::INFINITY {
        f32::MAX as f64
    } else {
        x as f64
    }
}

/// Ids sorted by (logit desc, id asc): the whole list, with a plain stable sort.
fn ref_order(logits: &[f32]) -> Vec<u32> {
    let mut v: Vec<u32> = (0..logits.len() as u32).collect();
    v.sort_by(|&a, &b| sane(logits[b as usize]).partial_cmp(&sane(logits[a as usize])).unwrap());
    v
}

fn ref_weights(logits: &[f32]) -> Vec<f64> {
    let max = logits.iter().map(|&l| sane(l)).fold(f64::NEG_INFINITY, f64::max);
    logits.iter().map(|&l| (sane(l) - max).exp()).collect()
}

fn logit_strategy() -> impl Strategy<Value = f32> {
    prop_oneof![
        8 => (-20i32..20).prop_map(|x| x as f32 * 0.5), // coarse grid: many exact ties
        8 => -10.0f32..10.0,
        1 => -200.0f32..-30.0, // far below: the histogram's tail bucket in top_p
        1 => Just(f32::NEG_INFINITY),
        1 => Just(f32::NAN),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 300, ..ProptestConfig::default() })]

    #[test]
    fn top_k_matches_full_sort(logits in prop::collection::vec(logit_strategy(), 1..400), k in 0usize..450) {
        let mut c = Candidates::from_logits(&logits);
        steps::top_k(&mut c, k);
        if k == 0 || k >= logits.len() {
            prop_assert_eq!(ids(&c), (0..logits.len() as u32).collect::<Vec<_>>());
        } else {
            prop_assert_eq!(ids(&c), ref_order(&logits)[..k].to_vec());
        }
    }

    #[test]
    fn top_p_matches_full_sort(logits in prop::collection::vec(logit_strategy(), 2..400), p in 0.0f32..0.999) {
        let w = ref_weights(&logits);
        prop_assume!(w.iter().all(|x| x.is_finite()));
        let total: f64 = w.iter().sum();
        let target = p as f64 * total;
        let order = ref_order(&logits);
        let mut c = Candidates::from_logits(&logits);
        steps::top_p(&mut c, p);
        let m = c.len();
        prop_assert!(m >= 1);
        let mut want = order[..m].to_vec();
        want.sort_unstable();
        prop_assert_eq!(ids(&c), want); // the best m, still in id order
        let cum = |n: usize| order[..n].iter().map(|&i| w[i as usize]).sum::<f64>();
        let tol = 1e-9 * total;
        prop_assert!(cum(m) >= target - tol, "kept mass {} < target {}", cum(m), target);
        if m > 1 {
            prop_assert!(cum(m - 1) < target + tol, "{} tokens already reach {}", m - 1, target);
        }
    }

    #[test]
    fn min_p_matches_ratio_rule(logits in prop::collection::vec(logit_strategy(), 1..300), p in 0.001f32..1.0) {
        let w = ref_weights(&logits);
        prop_assume!(w.iter().all(|x| x.is_finite()));
        let mut c = Candidates::from_logits(&logits);
        steps::min_p(&mut c, p);
        let kept = sorted_ids(&c);
        for (i, &ratio) in w.iter().enumerate() {
            if (ratio - p as f64).abs() < 1e-6 {
                continue; // on the boundary: either answer is right
            }
            prop_assert_eq!(kept.contains(&(i as u32)), ratio >= p as f64, "id {} ratio {}", i, ratio);
        }
    }

    #[test]
    fn penalties_match_f64(
        logits in prop::collection::vec(-10.0f32..10.0, 1..50),
        history in prop::collection::vec(0u32..60, 0..80),
        last_n in -1i32..90,
        repeat in 0.2f32..3.0,
        freq in -2.0f32..2.0,
        presence in -2.0f32..2.0,
    ) {
        let window: &[u32] = match last_n {
            -1 => &history,
            0 => &[],
            n => &history[history.len().saturating_sub(n as usize)..],
        };
        let counts = TokenCounts::from_history(&history, last_n);
        // dense (full row) and sparse (reversed pairs) paths
        let mut dense = Candidates::from_logits(&logits);
        steps::penalties(&mut dense, &counts, repeat, freq, presence);
        let mut sparse = Candidates::from_pairs(logits.iter().enumerate().rev().map(|(i, &l)| (i as u32, l)));
        steps::penalties(&mut sparse, &counts, repeat, freq, presence);
        for (i, &l) in logits.iter().enumerate() {
            let n = window.iter().filter(|&&t| t as usize == i).count() as f64;
            let l = l as f64;
            let want = if n == 0.0 {
                l
            } else {
                let r = if l <= 0.0 { l * repeat as f64 } else { l / repeat as f64 };
                r - n * freq as f64 - presence as f64
            };
            let got_d = dense.logit_of(i as u32).unwrap() as f64;
            let got_s = sparse.logit_of(i as u32).unwrap() as f64;
            prop_assert!((got_d - want).abs() <= 1e-4 * (1.0 + want.abs()), "id {} dense {} want {}", i, got_d, want);
            prop_assert_eq!(got_d, got_s);
        }
    }

    #[test]
    fn draw_matches_inverse_cdf(logits in prop::collection::vec(logit_strategy(), 1..100), u in 0.0f64..1.0) {
        let w = ref_weights(&logits);
        prop_assume!(w.iter().all(|x| x.is_finite()));
        let total: f64 = w.iter().sum();
        let target = u * total;
        let mut cum = 0.0;
        let mut want = None;
        for (i, &x) in w.iter().enumerate() {
            if (cum - target).abs() < 1e-9 * total || (cum + x - target).abs() < 1e-9 * total {
                prop_assume!(x == 0.0); // on a boundary: either side is right
            }
            cum += x;
            if x > 0.0 && cum > target {
                want = Some(i as u32);
                break;
            }
        }
        prop_assert_eq!(steps::draw(&Candidates::from_logits(&logits), u), want);
    }
}
