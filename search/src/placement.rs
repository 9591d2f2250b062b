//! Placement search: which K layers keep full attention. Every candidate placement is a
//! subnet of the supernet, scored on tasks; an [`Objective`] turns its scores into one
//! number (higher is better).
//!
//! The search is the beam search PostNAS uses: score each layer alone, seed the beam with
//! the best `beam` of them, extend every beam entry by every free layer, dedupe, keep the
//! best `beam`, until the placements hold K layers. Where scoring every K-subset costs no
//! more subnets than the beam would (K <= 2 of 30 layers with a beam of 12), the search is
//! exhaustive instead. Uniform placement (K layers evenly spaced) is scored the same way,
//! the baseline the learned placement is reported against.
use std::collections::{BTreeMap, BTreeSet};

use jetc_eval::Score;
use serde_json::json;

use crate::error::{err, Result};

/// One term of an objective: `weight * value` of a task's metric (negated when lower is better).
#[derive(Clone, Debug, PartialEq)]
pub struct Term {
    pub task: String,
    pub metric: String,
    pub weight: f64,
    pub higher_is_better: bool,
}

/// Whether higher is better for `metric`.
pub fn higher_is_better(metric: &str) -> bool {
    !matches!(metric, "nll" | "ppl" | "answer_loss" | "bits_per_byte")
}

/// The default metric of a task as a search objective: the correct answer's loss for
/// multiple-choice tasks (MMLU-style), accuracy (exact match) for retrieval and math, NLL
/// for lm.
pub fn default_metric(task: &str) -> &'static str {
    match task {
        "lm" => "nll",
        "passkey" | "niah" | "kv-recall" | "arith" => "acc",
        "squad" | "drop" | "nq" | "triviaqa" | "coqa" | "gsm8k" => "em",
        _ => "answer_loss",
    }
}

/// A weighted mix of task metrics; ties (equal accuracies, common when few prompts pass)
/// are broken by the answer losses of the accuracy terms.
#[derive(Clone, Debug, PartialEq)]
pub struct Objective {
    pub terms: Vec<Term>,
}

impl Objective {
    /// Each task's default metric, weight 1.
    pub fn defaults(tasks: &[String]) -> Objective {
        Objective {
            terms: tasks
                .iter()
                .map(|t| {
                    let m = default_metric(t);
                    Term {
                        task: t.clone(),
                        metric: m.into(),
                        weight: 1.0,
                        higher_is_better: higher_is_better(m),
                    }
                })
                .collect(),
        }
    }

    /// Parses `task[:metric][=weight],...`, e.g. `mmlu:answer_loss=1,passkey:acc=2`.
    pub fn parse(s: &str) -> Result<Objective> {
        let mut terms = Vec::new();
        for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let (name, weight) = match part.split_once('=') {
                Some((n, w)) => (
                    n.trim(),
                    w.trim().parse::<f64>().map_err(|_| {
                        err(format!("objective `{part}`: weight `{w}` is not a number"))
                    })?,
                ),
                None => (part, 1.0),
            };
            if !weight.is_finite() {
                return Err(err(format!(
                    "objective `{part}`: the weight must be finite"
                )));
            }
            let (task, metric) = match name.split_once(':') {
                Some((t, m)) => (t.trim().to_string(), m.trim().to_string()),
                None => (name.to_string(), default_metric(name).to_string()),
            };
            if !jetc_eval::TASKS.contains(&task.as_str()) {
                return Err(err(format!(
                    "objective `{part}`: unknown task `{task}` (the tasks are {})",
                    jetc_eval::TASKS.join(", ")
                )));
            }
            let hib = higher_is_better(&metric);
            terms.push(Term {
                task,
                metric,
                weight,
                higher_is_better: hib,
            });
        }
        if terms.is_empty() {
            return Err(err(format!(
                "objective `{s}`: no terms (give task[:metric][=weight],...)"
            )));
        }
        Ok(Objective { terms })
    }

    /// The tasks the objective needs scored.
    pub fn tasks(&self) -> Vec<String> {
        let mut out: Vec<String> = Vec::new();
        for t in &self.terms {
            if !out.contains(&t.task) {
                out.push(t.task.clone());
            }
        }
        out
    }

    fn metric(scores: &[Score], task: &str, metric: &str) -> Result<f64> {
        let s = scores
            .iter()
            .find(|s| s.task == task)
            .ok_or_else(|| err(format!("objective: task {task} was not scored")))?;
        s.get(metric).ok_or_else(|| {
            err(format!(
                "objective: task {task} has no metric `{metric}` (it has {})",
                s.metrics
                    .iter()
                    .map(|m| m.name.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            ))
        })
    }

    /// The objective of `scores` (higher is better) and its tie-break.
    pub fn value(&self, scores: &[Score]) -> Result<(f64, f64)> {
        let (mut v, mut tie) = (0.0, 0.0);
        for t in &self.terms {
            let x = Self::metric(scores, &t.task, &t.metric)?;
            v += t.weight * if t.higher_is_better { x } else { -x };
            if t.higher_is_better {
                if let Ok(loss) = Self::metric(scores, &t.task, "answer_loss") {
                    tie -= t.weight * loss;
                }
            }
        }
        Ok((v, tie))
    }

    /// The standard error of `value(a) - value(b)` from paired per-example differences (both
    /// scored on the same examples): each term's differences give a weighted variance, and
    /// the terms add. `None` where a term's metric carries no per-example values (totals,
    /// older score files) or the two differ in example count.
    pub fn paired_stderr(&self, a: &[Score], b: &[Score]) -> Result<Option<f64>> {
        let values = |scores: &[Score], task: &str, metric: &str| -> Result<Vec<f64>> {
            Self::metric(scores, task, metric)?;
            Ok(scores.iter().find(|s| s.task == task).and_then(|s| s.metrics.iter().find(|m| m.name == metric)).map(|m| m.values.clone()).unwrap_or_default())
        };
        let mut var = 0.0;
        for t in &self.terms {
            let (va, vb) = (values(a, &t.task, &t.metric)?, values(b, &t.task, &t.metric)?);
            if va.is_empty() || va.len() != vb.len() {
                return Ok(None);
            }
            let d: Vec<f64> = va.iter().zip(&vb).map(|(x, y)| x - y).collect();
            match jetc_eval::stats::stderr(&d) {
                Some(se) => var += (t.weight * se).powi(2),
                None => return Ok(None),
            }
        }
        Ok(Some(var.sqrt()))
    }

    pub fn describe(&self) -> String {
        self.terms
            .iter()
            .map(|t| format!("{}:{}={}", t.task, t.metric, t.weight))
            .collect::<Vec<_>>()
            .join(",")
    }
}

/// A scored placement.
#[derive(Clone, Debug, PartialEq)]
pub struct Scored {
    /// The full-attention layers, ascending.
    pub layers: Vec<usize>,
    pub scores: Vec<Score>,
    pub objective: f64,
    pub tiebreak: f64,
}

impl Scored {
    fn better_than(&self, o: &Scored) -> bool {
        (self.objective, self.tiebreak) > (o.objective, o.tiebreak)
            || ((self.objective, self.tiebreak) == (o.objective, o.tiebreak)
                && self.layers < o.layers)
    }

    /// The order that puts the better placement first.
    fn best_first(a: &Scored, b: &Scored) -> std::cmp::Ordering {
        if a.better_than(b) {
            std::cmp::Ordering::Less
        } else if b.better_than(a) {
            std::cmp::Ordering::Greater
        } else {
            std::cmp::Ordering::Equal
        }
    }

    pub fn to_json(&self) -> serde_json::Value {
        json!({"full_attn": self.layers, "objective": self.objective, "tiebreak": self.tiebreak, "scores": self.scores})
    }
}

/// The layers of single-layer scores (a heat map's cells) ranked by `objective`, best first
/// (ties by the tie-break, then the lower layer): the candidates a placement search keeps
/// when scoring every layer pair would cost too many subnets.
pub fn rank_layers(cells: &[(usize, Vec<Score>)], objective: &Objective) -> Result<Vec<usize>> {
    let mut scored = Vec::new();
    for (layer, scores) in cells {
        let (v, tie) = objective.value(scores)?;
        scored.push(Scored { layers: vec![*layer], scores: vec![], objective: v, tiebreak: tie });
    }
    scored.sort_by(Scored::best_first);
    Ok(scored.into_iter().map(|s| s.layers[0]).collect())
}

/// K layers of `n` spread evenly: the middle of each of K equal spans.
pub fn uniform(n: usize, k: usize) -> Vec<usize> {
    (0..k).map(|i| ((2 * i + 1) * n) / (2 * k)).collect()
}

/// Subnets a beam search of width `beam` scores for K of `m` candidate layers.
pub fn beam_cost(m: usize, k: usize, beam: usize) -> usize {
    m + (2..=k)
        .map(|j| beam.min(binomial(m, j - 1)) * (m + 1 - j))
        .sum::<usize>()
}

pub fn binomial(n: usize, k: usize) -> usize {
    if k > n {
        return 0;
    }
    (0..k).fold(1usize, |acc, i| acc.saturating_mul(n - i) / (i + 1))
}

/// Every K-subset of `cands`, in lexicographic order.
fn subsets(cands: &[usize], k: usize) -> Vec<Vec<usize>> {
    let mut out = Vec::new();
    let mut idx: Vec<usize> = (0..k).collect();
    if k == 0 || k > cands.len() {
        return out;
    }
    loop {
        out.push(idx.iter().map(|&i| cands[i]).collect());
        let Some(i) = (0..k).rev().find(|&i| idx[i] != i + cands.len() - k) else {
            break;
        };
        idx[i] += 1;
        for j in i + 1..k {
            idx[j] = idx[j - 1] + 1;
        }
    }
    out
}

/// How a search went.
#[derive(Clone, Debug)]
pub struct Outcome {
    /// `exhaustive` or `beam`.
    pub method: &'static str,
    /// Placements of K layers, best first.
    pub top: Vec<Scored>,
    /// The uniform placement, scored the same way.
    pub uniform: Scored,
    /// Distinct subnets scored (from the cache or new).
    pub evaluated: usize,
}

/// Searches K full-attention layers among `cands` (layer indices of the model), keeping
/// `beam` entries; `score(layers)` scores a placement (the caller caches).
pub fn search(
    cands: &[usize],
    n_layers: usize,
    k: usize,
    beam: usize,
    objective: &Objective,
    score: &mut dyn FnMut(&[usize]) -> Result<Vec<Score>>,
) -> Result<Outcome> {
    search_against(cands, uniform(n_layers, k), k, beam, objective, score)
}

/// K of `cands` spread evenly: the middle of each of K equal spans of the list (the uniform
/// placement among the layers left free, e.g. SWA layers beside fixed full-attention ones).
pub fn uniform_among(cands: &[usize], k: usize) -> Vec<usize> {
    let n = cands.len();
    (0..k.min(n)).map(|i| cands[((2 * i + 1) * n / (2 * k)).min(n - 1)]).collect()
}

/// [`search`] with the uniform placement it is scored against given.
pub fn search_against(
    cands: &[usize],
    uniform_layers: Vec<usize>,
    k: usize,
    beam: usize,
    objective: &Objective,
    score: &mut dyn FnMut(&[usize]) -> Result<Vec<Score>>,
) -> Result<Outcome> {
    if k == 0 || k > cands.len() {
        return Err(err(format!(
            "budget {k}: between 1 and the {} candidate layers",
            cands.len()
        )));
    }
    if beam == 0 {
        return Err(err("--beam must be at least 1"));
    }
    let mut seen: BTreeMap<Vec<usize>, Scored> = BTreeMap::new();
    let mut eval =
        |layers: Vec<usize>, seen: &mut BTreeMap<Vec<usize>, Scored>| -> Result<Scored> {
            if let Some(s) = seen.get(&layers) {
                return Ok(s.clone());
            }
            let scores = score(&layers)?;
            let (objective, tiebreak) = objective.value(&scores)?;
            let s = Scored {
                layers: layers.clone(),
                scores,
                objective,
                tiebreak,
            };
            seen.insert(layers, s.clone());
            Ok(s)
        };
    let rank = |mut v: Vec<Scored>| {
        v.sort_by(Scored::best_first);
        v
    };
    let exhaustive = binomial(cands.len(), k) <= beam_cost(cands.len(), k, beam);
    let top = if exhaustive {
        let mut all = Vec::new();
        for s in subsets(cands, k) {
            all.push(eval(s, &mut seen)?);
        }
        rank(all)
    } else {
        let mut frontier = Vec::new();
        for &l in cands {
            frontier.push(eval(vec![l], &mut seen)?);
        }
        let mut frontier = rank(frontier);
        for _ in 1..k {
            frontier.truncate(beam);
            let mut next: BTreeSet<Vec<usize>> = BTreeSet::new();
            for entry in &frontier {
                for &l in cands.iter().filter(|l| !entry.layers.contains(l)) {
                    let mut p = entry.layers.clone();
                    p.push(l);
                    p.sort_unstable();
                    next.insert(p);
                }
            }
            let mut scored = Vec::new();
            for p in next {
                scored.push(eval(p, &mut seen)?);
            }
            frontier = rank(scored);
        }
        frontier
    };
    let uniform = eval(uniform_layers, &mut seen)?;
    Ok(Outcome {
        method: if exhaustive { "exhaustive" } else { "beam" },
        top,
        uniform,
        evaluated: seen.len(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use jetc_eval::Metric;

    /// A synthetic supernet of 10 layers: the answer loss falls by w[l] for each attention
    /// layer l, plus a bonus when 2 and 7 are together (an interaction no single layer shows).
    fn scorer(calls: &mut usize) -> impl FnMut(&[usize]) -> Result<Vec<Score>> + '_ {
        let w = [0.1, 0.5, 0.2, 0.05, 0.4, 0.0, 0.3, 0.25, 0.15, 0.1];
        move |layers: &[usize]| {
            *calls += 1;
            let mut loss = 5.0 - layers.iter().map(|&l| w[l]).sum::<f64>();
            if layers.contains(&2) && layers.contains(&7) {
                loss -= 1.0;
            }
            Ok(vec![Score {
                task: "mmlu".into(),
                examples: 10,
                metrics: vec![
                    Metric {
                        name: "answer_loss".into(),
                        value: loss,
                        stderr: Some(0.1),
                        values: vec![],
                    },
                    Metric {
                        name: "acc".into(),
                        value: 0.3,
                        stderr: None,
                        values: vec![],
                    },
                ],
            }])
        }
    }

    #[test]
    fn exhaustive_finds_the_interaction_and_the_beam_its_share() {
        let obj = Objective::parse("mmlu").unwrap();
        assert_eq!(obj.terms[0].metric, "answer_loss");
        let cands: Vec<usize> = (0..10).collect();
        let mut calls = 0;
        let out = search(&cands, 10, 2, 12, &obj, &mut scorer(&mut calls)).unwrap();
        assert_eq!(out.method, "exhaustive");
        assert_eq!(
            out.top[0].layers,
            vec![2, 7],
            "the pair beats the two best singles (1, 4)"
        );
        assert_eq!(out.top.len(), 45);
        assert_eq!(out.uniform.layers, vec![2, 7]);
        assert_eq!(
            calls, 45,
            "every pair once; the uniform pair is one of them"
        );
        // A beam of 2 seeds with layers 1 and 4 and cannot see the 2+7 pair.
        let mut calls = 0;
        let out = search(&cands, 10, 2, 2, &obj, &mut scorer(&mut calls)).unwrap();
        assert_eq!(out.method, "beam");
        assert_eq!(out.top[0].layers, vec![1, 4]);
        assert_eq!(
            calls,
            10 + 17 + 1,
            "10 singles, 17 distinct extensions of 2 entries, the uniform 2+7"
        );
        assert_eq!(out.evaluated, calls);
    }

    #[test]
    fn paired_stderr_of_the_difference() {
        let sc = |values: Vec<f64>| vec![Score { task: "mmlu".into(), examples: values.len(), metrics: vec![Metric::mean_of("answer_loss", &values)] }];
        let obj = Objective::parse("mmlu=2").unwrap();
        // Differences 0.5, 0.5, 0.4: sample sd 0.057735 over sqrt(3) = 1/30, times the weight 2.
        let se = obj.paired_stderr(&sc(vec![1.0, 2.0, 3.0]), &sc(vec![0.5, 1.5, 2.6])).unwrap().unwrap();
        assert!((se - 2.0 / 30.0).abs() < 1e-12, "{se}");
        // Far below the unpaired one: the examples' own spread cancels.
        let unpaired = 2.0 * (jetc_eval::stats::stderr(&[1.0, 2.0, 3.0]).unwrap().powi(2) + jetc_eval::stats::stderr(&[0.5, 1.5, 2.6]).unwrap().powi(2)).sqrt();
        assert!(se < unpaired / 10.0);
        let no_values = vec![Score { task: "mmlu".into(), examples: 3, metrics: vec![Metric { name: "answer_loss".into(), value: 2.0, stderr: None, values: vec![] }] }];
        assert_eq!(obj.paired_stderr(&no_values, &sc(vec![1.0, 2.0, 3.0])).unwrap(), None);
        assert_eq!(obj.paired_stderr(&sc(vec![1.0, 2.0]), &sc(vec![1.0, 2.0, 3.0])).unwrap(), None);
        assert!(Objective::parse("passkey").unwrap().paired_stderr(&no_values, &no_values).is_err());
    }

    #[test]
    fn rank_layers_orders_singles_by_the_objective() {
        let obj = Objective::parse("mmlu").unwrap();
        let mut calls = 0;
        let mut score = scorer(&mut calls);
        let cells: Vec<(usize, Vec<Score>)> = (0..10).map(|l| (l, score(&[l]).unwrap())).collect();
        // w = [0.1, 0.5, 0.2, 0.05, 0.4, 0.0, 0.3, 0.25, 0.15, 0.1]: 0 and 9 tie, the lower first.
        assert_eq!(rank_layers(&cells, &obj).unwrap(), vec![1, 4, 6, 7, 2, 8, 0, 9, 3, 5]);
        let bad = Objective::parse("passkey").unwrap();
        assert!(rank_layers(&cells, &bad).unwrap_err().to_string().contains("passkey"));
    }

    #[test]
    fn budget_three_beam_extends_the_best_pairs() {
        let obj = Objective::parse("mmlu:answer_loss=1").unwrap();
        let mut calls = 0;
        let out = search(
            &(0..10).collect::<Vec<_>>(),
            10,
            3,
            3,
            &obj,
            &mut scorer(&mut calls),
        )
        .unwrap();
        assert_eq!(out.method, "beam");
        // The pair 1+7 (third of the pairs) grows into 1+2+7, where the interaction pays.
        assert_eq!(out.top[0].layers, vec![1, 2, 7]);
        assert!(out.top.windows(2).all(|w| w[0].objective >= w[1].objective));
        assert_eq!(out.uniform.layers, uniform(10, 3));
    }

    #[test]
    fn uniform_subsets_costs_and_objectives() {
        assert_eq!(uniform(30, 2), vec![7, 22]);
        assert_eq!(uniform(30, 3), vec![5, 15, 25]);
        assert_eq!(uniform(30, 1), vec![15]);
        assert_eq!(uniform_among(&(0..30).collect::<Vec<_>>(), 3), uniform(30, 3));
        assert_eq!(uniform_among(&[0, 1, 3, 4, 5, 8], 2), vec![1, 5]);
        assert_eq!(uniform_among(&[4, 9], 1), vec![9]);
        assert_eq!(binomial(30, 2), 435);
        assert_eq!(beam_cost(30, 2, 12), 30 + 12 * 29);
        assert_eq!(
            subsets(&[1, 3, 5, 7], 2),
            vec![
                vec![1, 3],
                vec![1, 5],
                vec![1, 7],
                vec![3, 5],
                vec![3, 7],
                vec![5, 7]
            ]
        );
        let o = Objective::parse("mmlu=2,passkey:acc=0.5").unwrap();
        assert_eq!(o.tasks(), vec!["mmlu".to_string(), "passkey".to_string()]);
        let scores = vec![
            Score {
                task: "mmlu".into(),
                examples: 1,
                metrics: vec![Metric {
                    name: "answer_loss".into(),
                    value: 3.0,
                    stderr: None,
                    values: vec![],
                }],
            },
            Score {
                task: "passkey".into(),
                examples: 1,
                metrics: vec![
                    Metric {
                        name: "acc".into(),
                        value: 0.5,
                        stderr: None,
                        values: vec![],
                    },
                    Metric {
                        name: "answer_loss".into(),
                        value: 2.0,
                        stderr: None,
                        values: vec![],
                    },
                ],
            },
        ];
        assert_eq!(o.value(&scores).unwrap(), (-6.0 + 0.25, -1.0));
        assert!(Objective::parse("mmlu-x")
            .unwrap_err()
            .to_string()
            .contains("unknown task"));
        assert!(Objective::parse("mmlu=abc")
            .unwrap_err()
            .to_string()
            .contains("not a number"));
        assert!(Objective::parse("lm:acc")
            .unwrap()
            .value(&[Score {
                task: "lm".into(),
                examples: 1,
                metrics: vec![]
            }])
            .unwrap_err()
            .to_string()
            .contains("no metric `acc`"));
        let mut calls = 0;
        assert!(search(&[0, 1], 2, 3, 2, &o, &mut scorer(&mut calls))
            .unwrap_err()
            .to_string()
            .contains("budget 3"));
    }
}
