//! Properties of the placement search on random additive-plus-pairwise objectives, against a
//! brute-force oracle that scores every K-subset: the exhaustive search finds the oracle's
//! optimum; the beam never scores a placement twice, returns placements of exactly K
//! distinct candidate layers, best first, and with a beam as wide as the candidate count
//! at K = 2 it is exact too.
use jetc_eval::{Metric, Score};
use jetc_search::placement::{search, Objective};
use proptest::prelude::*;

fn value(w: &[f64], pair: &[Vec<f64>], layers: &[usize]) -> f64 {
    let mut v: f64 = layers.iter().map(|&l| w[l]).sum();
    for (i, &a) in layers.iter().enumerate() {
        for &b in &layers[i + 1..] {
            v += pair[a][b];
        }
    }
    v
}

fn all_subsets(n: usize, k: usize) -> Vec<Vec<usize>> {
    (0u32..1 << n).filter(|m| m.count_ones() as usize == k).map(|m| (0..n).filter(|i| m >> i & 1 == 1).collect()).collect()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]
    #[test]
    fn exhaustive_matches_brute_force_and_beam_is_well_formed(
        n in 3usize..9,
        k in 1usize..4,
        beam in 1usize..6,
        seed in any::<u64>(),
    ) {
        prop_assume!(k <= n);
        let mut x = seed | 1;
        let mut rnd = || { x ^= x << 13; x ^= x >> 7; x ^= x << 17; (x % 1000) as f64 / 1000.0 };
        let w: Vec<f64> = (0..n).map(|_| rnd()).collect();
        let pair: Vec<Vec<f64>> = (0..n).map(|_| (0..n).map(|_| rnd() - 0.5).collect()).collect();
        let obj = Objective::parse("mmlu:acc").unwrap();
        let cands: Vec<usize> = (0..n).collect();
        let mut seen = std::collections::BTreeSet::new();
        let mut twice = false;
        let mut score = |layers: &[usize]| {
            twice |= !seen.insert(layers.to_vec());
            let v = value(&w, &pair, layers);
            Ok(vec![Score { task: "mmlu".into(), examples: 1, metrics: vec![Metric { name: "acc".into(), value: v, stderr: None, values: vec![] }] }])
        };
        let out = search(&cands, n, k, beam, &obj, &mut score).unwrap();
        prop_assert!(!twice, "a placement was scored twice");
        let best = all_subsets(n, k).iter().map(|s| value(&w, &pair, s)).fold(f64::NEG_INFINITY, f64::max);
        for p in &out.top {
            prop_assert_eq!(p.layers.len(), k);
            prop_assert!(p.layers.windows(2).all(|w| w[0] < w[1]));
        }
        prop_assert!(out.top.windows(2).all(|t| t[0].objective >= t[1].objective));
        prop_assert!(out.top[0].objective <= best + 1e-12);
        if out.method == "exhaustive" || (k == 2 && beam >= n) {
            prop_assert!((out.top[0].objective - best).abs() < 1e-12, "{} found {}, the optimum is {}", out.method, out.top[0].objective, best);
        }
    }
}
