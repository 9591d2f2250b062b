//! The supernet's candidates and the path phase's per-step layout sampling.
//!
//! A once-for-all supernet gives every layer the same candidates: the teacher's full
//! attention, its sliding-window form, and one or more linear blocks. Each path-phase step
//! trains one subnet, a candidate per layer, drawn by one of:
//! - `uniform`: every layer independently, each candidate with equal odds (about L/2 layers
//!   on attention with two candidates, far from a small budget);
//! - `budget:K`: exactly K layers on full attention (positions uniform), every other layer
//!   one of the other candidates with equal odds: near the budget the search will use;
//! - `layouts` ("stars and bars"): the count of each candidate drawn uniformly among the
//!   compositions of L, then the positions shuffled, so all-linear and mostly-attention
//!   subnets are as likely as balanced ones.
//!
//! Draws are seeded by (run seed, step), so a resumed run replays the same subnets.
use jetc_models::convert::Layout;
use jetc_passes::linearize::Block;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};

/// What one layer of a subnet is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Choice {
    Attn,
    Swa,
    Linear(Block),
}

impl Choice {
    pub fn name(self) -> &'static str {
        match self {
            Choice::Attn => "attn",
            Choice::Swa => "swa",
            Choice::Linear(b) => b.name(),
        }
    }
}

/// The candidates every layer of the supernet holds.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Candidates {
    pub attn: bool,
    pub swa: bool,
    /// Linear blocks, the first being the default block of layouts built from choices.
    pub linear: Vec<Block>,
}

impl Candidates {
    /// Parses `attn,swa,jetblock,gated-deltanet` (any order; at least one linear block).
    pub fn parse(s: &str) -> Result<Candidates, String> {
        let mut c = Candidates { attn: false, swa: false, linear: Vec::new() };
        for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            match part {
                "attn" => c.attn = true,
                "swa" => c.swa = true,
                name => {
                    let b = Block::parse(name).map_err(|e| format!("--supernet: {e}; or attn, swa"))?;
                    if c.linear.contains(&b) {
                        return Err(format!("--supernet: `{name}` is listed twice"));
                    }
                    c.linear.push(b);
                }
            }
        }
        if c.linear.is_empty() {
            return Err(format!("--supernet `{s}` has no linear block to train (e.g. attn,swa,jetblock)"));
        }
        Ok(c)
    }

    /// Every choice, in a fixed order: attn, swa, then the linear blocks.
    pub fn choices(&self) -> Vec<Choice> {
        let mut v = Vec::new();
        if self.attn {
            v.push(Choice::Attn);
        }
        if self.swa {
            v.push(Choice::Swa);
        }
        v.extend(self.linear.iter().map(|&b| Choice::Linear(b)));
        v
    }

    /// `attn,swa,jetblock` as given back to the user.
    pub fn describe(&self) -> String {
        self.choices().iter().map(|c| c.name()).collect::<Vec<_>>().join(",")
    }
}

/// How the path phase picks a subnet per step.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Sample {
    /// The layout given.
    Fixed,
    Uniform,
    Budget(usize),
    Layouts,
}

impl Sample {
    pub fn parse(s: &str) -> Result<Sample, String> {
        match s {
            "fixed" => Ok(Sample::Fixed),
            "uniform" => Ok(Sample::Uniform),
            "layouts" => Ok(Sample::Layouts),
            _ => match s.strip_prefix("budget:").map(str::parse::<usize>) {
                Some(Ok(k)) => Ok(Sample::Budget(k)),
                _ => Err(format!("unknown --sample `{s}` (fixed, uniform, budget:K or layouts)")),
            },
        }
    }
}

/// The layout of a choice per layer (`base` gives the window and the mixer config).
pub fn layout_of_choices(base: &Layout, cands: &Candidates, choices: &[Choice]) -> Layout {
    let default = cands.linear.first().copied().unwrap_or(base.block);
    let mut l = Layout { full_attn: vec![], swa: vec![], window: base.window, block: default, blocks: vec![], config: base.config };
    for (i, c) in choices.iter().enumerate() {
        match c {
            Choice::Attn => l.full_attn.push(i),
            Choice::Swa => l.swa.push(i),
            Choice::Linear(b) if *b != default => l.blocks.push((i, *b)),
            Choice::Linear(_) => {}
        }
    }
    l
}

/// The choices of step `step` over `layers` layers. At least one layer is linear (so a step
/// always has a block to train): a draw without one gets a random layer made linear.
pub fn sample_choices(cands: &Candidates, sample: &Sample, layers: usize, seed: u64, step: u64) -> Result<Vec<Choice>, String> {
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed ^ step.wrapping_mul(0x9E37_79B9_7F4A_7C15));
    let all = cands.choices();
    let pick = |rng: &mut rand::rngs::StdRng, from: &[Choice]| from[rng.random_range(0..from.len())];
    let mut choices = match sample {
        Sample::Fixed => return Err("internal: a fixed layout is not sampled".into()),
        Sample::Uniform => (0..layers).map(|_| pick(&mut rng, &all)).collect::<Vec<_>>(),
        Sample::Budget(k) => {
            if *k > 0 && !cands.attn {
                return Err(format!("--sample budget:{k} needs `attn` among the --supernet candidates"));
            }
            let others: Vec<Choice> = all.iter().copied().filter(|c| *c != Choice::Attn).collect();
            let mut order: Vec<usize> = (0..layers).collect();
            order.shuffle(&mut rng);
            let mut v: Vec<Choice> = (0..layers).map(|_| pick(&mut rng, &others)).collect();
            for &l in order.iter().take(*k) {
                v[l] = Choice::Attn;
            }
            v
        }
        Sample::Layouts => {
            // A uniform composition of `layers` into `m` counts: m - 1 bars among
            // layers + m - 1 slots.
            let m = all.len();
            let mut slots: Vec<usize> = (0..layers + m - 1).collect();
            slots.shuffle(&mut rng);
            let mut bars: Vec<usize> = slots[..m - 1].to_vec();
            bars.sort_unstable();
            let mut v = Vec::with_capacity(layers);
            let mut prev = 0usize;
            for (i, &c) in all.iter().enumerate() {
                let end = if i + 1 < m { bars[i] - i } else { layers };
                v.extend(std::iter::repeat_n(c, end - prev));
                prev = end;
            }
            v.shuffle(&mut rng);
            v
        }
    };
    if !choices.iter().any(|c| matches!(c, Choice::Linear(_))) {
        let l = rng.random_range(0..layers);
        choices[l] = Choice::Linear(cands.linear[rng.random_range(0..cands.linear.len())]);
    }
    Ok(choices)
}

#[cfg(test)]
mod tests {
    use super::*;
    use jetc_passes::linearize::MixerConfig;
    use std::collections::HashMap;

    fn cands(s: &str) -> Candidates {
        Candidates::parse(s).expect("candidates")
    }

    #[test]
    fn parses_candidates_and_refuses_bad_lists() {
        let c = cands("attn,swa,jetblock,gated-deltanet");
        assert_eq!(c.choices(), vec![Choice::Attn, Choice::Swa, Choice::Linear(Block::JetBlock), Choice::Linear(Block::GatedDeltaNet)]);
        assert_eq!(c.describe(), "attn,swa,jetblock,gated-deltanet");
        assert!(Candidates::parse("attn,swa").unwrap_err().contains("no linear block"));
        assert!(Candidates::parse("attn,jetblock,jetblock").unwrap_err().contains("twice"));
        assert!(Candidates::parse("attn,lstm").unwrap_err().contains("lstm"));
        assert_eq!(Sample::parse("budget:3"), Ok(Sample::Budget(3)));
        assert!(Sample::parse("budget:x").is_err());
    }

    #[test]
    fn budget_draws_exactly_k_attention_layers_and_every_other_candidate() {
        let c = cands("attn,swa,jetblock,gated-deltanet");
        let mut seen: HashMap<Choice, usize> = HashMap::new();
        for step in 0..200 {
            let v = sample_choices(&c, &Sample::Budget(3), 12, 7, step).expect("sample");
            assert_eq!(v.iter().filter(|&&x| x == Choice::Attn).count(), 3, "step {step}: {v:?}");
            for x in v {
                *seen.entry(x).or_default() += 1;
            }
        }
        // 9 non-attention layers x 200 steps over 3 candidates: about 600 each.
        for ch in [Choice::Swa, Choice::Linear(Block::JetBlock), Choice::Linear(Block::GatedDeltaNet)] {
            let n = seen.get(&ch).copied().unwrap_or(0);
            assert!((480..720).contains(&n), "{ch:?} drawn {n} times");
        }
        // The same (seed, step) gives the same subnet; another seed another one.
        let a = sample_choices(&c, &Sample::Budget(3), 12, 7, 5).expect("sample");
        assert_eq!(a, sample_choices(&c, &Sample::Budget(3), 12, 7, 5).expect("sample"));
        assert!((0..20).any(|s| sample_choices(&c, &Sample::Budget(3), 12, 8, s).expect("sample") != sample_choices(&c, &Sample::Budget(3), 12, 7, s).expect("sample")));
        assert!(sample_choices(&cands("swa,jetblock"), &Sample::Budget(2), 4, 0, 0).unwrap_err().contains("attn"));
    }

    #[test]
    fn stars_and_bars_draws_every_composition_equally() {
        // 3 layers, 2 candidates: counts (attn, linear) in {(0,3), (1,2), (2,1), (3,0)}, each
        // 1/4; (3, 0) has no linear layer and is repaired to (2, 1).
        let c = cands("attn,jetblock");
        let mut counts = [0usize; 4];
        let n = 4000;
        for step in 0..n {
            let v = sample_choices(&c, &Sample::Layouts, 3, 1, step).expect("sample");
            counts[v.iter().filter(|&&x| x == Choice::Attn).count()] += 1;
        }
        let expect = [n as f64 / 4.0, n as f64 / 4.0, n as f64 / 2.0, 0.0];
        for (k, (&got, &want)) in counts.iter().zip(&expect).enumerate() {
            assert!((got as f64 - want).abs() <= 0.1 * n as f64 / 4.0 + 1.0, "{k} attention layers: {got} draws, expected about {want} ({counts:?})");
        }
    }

    #[test]
    fn uniform_draws_each_candidate_per_layer_and_always_trains_a_block() {
        let c = cands("attn,swa,jetblock");
        let mut attn = 0usize;
        for step in 0..300 {
            let v = sample_choices(&c, &Sample::Uniform, 2, 3, step).expect("sample");
            assert!(v.iter().any(|x| matches!(x, Choice::Linear(_))), "step {step}: {v:?}");
            attn += v.iter().filter(|&&x| x == Choice::Attn).count();
        }
        // 2/3 attention layers per step before the repair; the 4/9 of steps with no linear
        // layer lose 2/9 of an attention layer on average: 4/9 x 300 = 133 expected.
        assert!((105..165).contains(&attn), "{attn} attention draws");
    }

    #[test]
    fn choices_become_a_layout_with_per_layer_blocks() {
        let c = cands("attn,swa,jetblock,gated-deltanet");
        let base = Layout { full_attn: vec![], swa: vec![], window: Some(64), block: Block::Gla, blocks: vec![], config: MixerConfig::default() };
        let ch = [Choice::Attn, Choice::Linear(Block::GatedDeltaNet), Choice::Swa, Choice::Linear(Block::JetBlock)];
        let l = layout_of_choices(&base, &c, &ch);
        assert_eq!((l.full_attn.clone(), l.swa.clone(), l.window, l.block, l.blocks.clone()), (vec![0], vec![2], Some(64), Block::JetBlock, vec![(1, Block::GatedDeltaNet)]));
        let types: Vec<&str> = (0..4).map(|i| l.layer_type(i)).collect();
        assert_eq!(types, vec!["attn", "gated-deltanet", "swa", "jetblock"]);
    }
}
