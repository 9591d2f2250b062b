//! AdamW (decoupled weight decay, Loshchilov & Hutter) with per-group learning-rate scales
//! and weight decay, a linear-warmup + cosine schedule, and global-norm gradient clipping.
//!
//! The learning rate is an argument of every step, so a schedule never rebuilds anything.
//! Norm weights, biases, `A_log` and `dt_bias` get no weight decay ([`no_decay`]).
use ndarray::{ArrayD, Zip};

use crate::error::{Result, TrainError};

#[derive(Clone, Debug, PartialEq)]
pub struct AdamWConfig {
    pub beta1: f32,
    pub beta2: f32,
    pub eps: f32,
    pub weight_decay: f32,
    /// Clip the global gradient norm to this (none when `None`).
    pub clip_norm: Option<f32>,
}

impl Default for AdamWConfig {
    fn default() -> Self {
        AdamWConfig { beta1: 0.9, beta2: 0.999, eps: 1e-8, weight_decay: 0.01, clip_norm: Some(1.0) }
    }
}

/// One trainable tensor with its Adam moments.
#[derive(Clone, Debug)]
pub struct Slot {
    pub name: String,
    pub value: ArrayD<f32>,
    pub m: ArrayD<f32>,
    pub v: ArrayD<f32>,
    /// Weight decay applies to this parameter.
    pub decay: bool,
    /// The group's learning-rate multiplier.
    pub lr_scale: f32,
    /// Updates this slot has had (its Adam bias correction): fewer than the optimizer's steps
    /// when some steps gave it no gradient (a supernet candidate off the sampled path).
    pub steps: u64,
}

/// True for parameters that take no weight decay: norms, biases, A_log, dt_bias and 1-D
/// tensors in general (gains and offsets).
pub fn no_decay(name: &str, shape: &[usize]) -> bool {
    let n = name.to_ascii_lowercase();
    shape.len() <= 1 || n.contains("norm") || n.contains("bias") || n.contains("a_log") || n.contains("dt_bias")
}

#[derive(Clone, Debug)]
pub struct AdamW {
    pub config: AdamWConfig,
    pub slots: Vec<Slot>,
    /// Steps taken so far (the bias corrections use `step + 1`).
    pub step: u64,
}

/// What one step did.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct StepReport {
    /// Global gradient norm before clipping.
    pub grad_norm: f32,
    pub lr: f32,
}

impl AdamW {
    pub fn new(config: AdamWConfig, params: Vec<(String, ArrayD<f32>)>) -> AdamW {
        let slots = params
            .into_iter()
            .map(|(name, value)| Slot {
                decay: !no_decay(&name, value.shape()),
                m: ArrayD::zeros(value.raw_dim()),
                v: ArrayD::zeros(value.raw_dim()),
                name,
                value,
                lr_scale: 1.0,
                steps: 0,
            })
            .collect();
        AdamW { config, slots, step: 0 }
    }

    /// One update with gradients in slot order, at learning rate `lr`. A non-finite gradient
    /// stops with an error naming the parameter, before anything is changed.
    pub fn step(&mut self, grads: &[ArrayD<f32>], lr: f32) -> Result<StepReport> {
        let some: Vec<Option<&ArrayD<f32>>> = grads.iter().map(Some).collect();
        self.step_some(&some, lr)
    }

    /// One update where a slot without a gradient (`None`: its parameter was not on this
    /// step's path) is left as it is: weight, moments and bias correction untouched, and no
    /// weight decay. A zero gradient would instead decay the weight and age its moments.
    pub fn step_some(&mut self, grads: &[Option<&ArrayD<f32>>], lr: f32) -> Result<StepReport> {
        if grads.len() != self.slots.len() {
            return Err(TrainError::Other(format!("{} gradients for {} parameters", grads.len(), self.slots.len())));
        }
        let mut sq = 0f64;
        for (s, g) in self.slots.iter().zip(grads) {
            let Some(g) = g else { continue };
            if g.shape() != s.value.shape() {
                return Err(TrainError::Param { name: s.name.clone(), msg: format!("gradient {:?} for a weight {:?}", g.shape(), s.value.shape()) });
            }
            let mut local = 0f64;
            for &x in g.iter() {
                local += (x as f64) * (x as f64);
            }
            if !local.is_finite() {
                return Err(TrainError::NonFinite { step: self.step, what: format!("the gradient of `{}`", s.name), value: local as f32 });
            }
            sq += local;
        }
        let norm = sq.sqrt() as f32;
        let clip = match self.config.clip_norm {
            Some(c) if norm > c && norm > 0.0 => c / norm,
            _ => 1.0,
        };
        let c = &self.config;
        for (s, g) in self.slots.iter_mut().zip(grads) {
            let Some(g) = g else { continue };
            let t = (s.steps + 1) as i32;
            let bc1 = 1.0 - c.beta1.powi(t);
            let bc2 = 1.0 - c.beta2.powi(t);
            let lr_s = lr * s.lr_scale;
            let wd = if s.decay { c.weight_decay } else { 0.0 };
            Zip::from(&mut s.value).and(&mut s.m).and(&mut s.v).and(*g).for_each(|w, m, v, &gr| {
                let gr = gr * clip;
                *m = c.beta1 * *m + (1.0 - c.beta1) * gr;
                *v = c.beta2 * *v + (1.0 - c.beta2) * gr * gr;
                let mh = *m / bc1;
                let vh = *v / bc2;
                // PyTorch's order: decay the weight, then the Adam step.
                *w *= 1.0 - lr_s * wd;
                *w -= lr_s * mh / (vh.sqrt() + c.eps);
            });
            s.steps += 1;
        }
        self.step += 1;
        Ok(StepReport { grad_norm: norm, lr })
    }
}

/// Linear warmup to `peak` over `warmup` steps, then cosine decay to `peak * min_ratio` at
/// `total` steps (and flat after).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Schedule {
    pub peak: f32,
    pub warmup: u64,
    pub total: u64,
    pub min_ratio: f32,
}

impl Schedule {
    pub fn lr(&self, step: u64) -> f32 {
        if self.warmup > 0 && step < self.warmup {
            return self.peak * (step + 1) as f32 / self.warmup as f32;
        }
        let span = self.total.saturating_sub(self.warmup).max(1);
        let p = ((step - self.warmup.min(step)) as f32 / span as f32).min(1.0);
        let cos = 0.5 * (1.0 + (std::f32::consts::PI * p).cos());
        self.peak * (self.min_ratio + (1.0 - self.min_ratio) * cos)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ndarray::IxDyn;

    /// A slot without a gradient is untouched (weight, moments, step count); when it next
    /// gets one, its update is the one a fresh optimizer's first step would make (its own
    /// bias correction), and the global-norm clip counts only the gradients present.
    #[test]
    fn slots_without_a_gradient_are_left_alone() {
        let w = ArrayD::from_shape_vec(IxDyn(&[2]), vec![1.0f32, -1.0]).unwrap();
        let cfg = AdamWConfig { weight_decay: 0.1, clip_norm: Some(1.0), ..Default::default() };
        let mut opt = AdamW::new(cfg.clone(), vec![("a.weight".into(), w.clone()), ("b.weight".into(), w.clone())]);
        let g = ArrayD::from_shape_vec(IxDyn(&[2]), vec![0.3f32, -0.4]).unwrap();
        for _ in 0..3 {
            opt.step_some(&[Some(&g), None], 1e-2).unwrap();
        }
        assert_eq!(opt.slots[1].value, w);
        assert_eq!((opt.slots[0].steps, opt.slots[1].steps, opt.step), (3, 0, 3));
        assert!(opt.slots[1].m.iter().all(|&x| x == 0.0));
        // b's first update equals a fresh optimizer's first step.
        let big = ArrayD::from_shape_vec(IxDyn(&[2]), vec![3.0f32, 4.0]).unwrap();
        opt.step_some(&[None, Some(&big)], 1e-2).unwrap();
        let mut fresh = AdamW::new(cfg, vec![("b.weight".into(), w)]);
        fresh.step(&[big], 1e-2).unwrap();
        assert_eq!(opt.slots[1].value, fresh.slots[0].value);
        assert_eq!(opt.slots[1].steps, 1);
    }

    /// AdamW against a float64 transcription of PyTorch's `torch.optim.AdamW` update.
    #[test]
    fn adamw_matches_the_reference_update() {
        let w0 = [0.5f64, -1.0, 2.0];
        let grads = [[0.1f64, -0.2, 0.3], [0.05, 0.4, -0.1], [-0.3, 0.1, 0.2]];
        let (b1, b2, eps, wd, lr) = (0.9f64, 0.95f64, 1e-8f64, 0.1f64, 1e-2f64);
        let mut opt = AdamW::new(
            AdamWConfig { beta1: b1 as f32, beta2: b2 as f32, eps: eps as f32, weight_decay: wd as f32, clip_norm: None },
            vec![("w.weight".into(), ArrayD::from_shape_vec(IxDyn(&[3, 1]), w0.iter().map(|&x| x as f32).collect()).unwrap())],
        );
        // Reference, PyTorch's order: w *= 1 - lr*wd; m, v update; w -= lr * mhat / (sqrt(vhat) + eps).
        let (mut w, mut m, mut v) = (w0.to_vec(), vec![0f64; 3], vec![0f64; 3]);
        for (t, g) in grads.iter().enumerate() {
            for i in 0..3 {
                w[i] *= 1.0 - lr * wd;
                m[i] = b1 * m[i] + (1.0 - b1) * g[i];
                v[i] = b2 * v[i] + (1.0 - b2) * g[i] * g[i];
                let mh = m[i] / (1.0 - b1.powi(t as i32 + 1));
                let vh = v[i] / (1.0 - b2.powi(t as i32 + 1));
                w[i] -= lr * mh / (vh.sqrt() + eps);
            }
            let ga = ArrayD::from_shape_vec(IxDyn(&[3, 1]), g.iter().map(|&x| x as f32).collect()).unwrap();
            opt.step(&[ga], lr as f32).unwrap();
        }
        for i in 0..3 {
            assert!((opt.slots[0].value[[i, 0]] as f64 - w[i]).abs() < 1e-6, "{i}: {} vs {}", opt.slots[0].value[[i, 0]], w[i]);
        }
    }

    #[test]
    fn clipping_scales_to_the_global_norm_and_nan_stops() {
        let mut opt = AdamW::new(AdamWConfig { clip_norm: Some(1.0), ..Default::default() }, vec![("a".into(), ArrayD::zeros(IxDyn(&[2])))]);
        let g = ArrayD::from_shape_vec(IxDyn(&[2]), vec![3.0, 4.0]).unwrap();
        let r = opt.step(&[g], 1e-3).unwrap();
        assert!((r.grad_norm - 5.0).abs() < 1e-6);
        let bad = ArrayD::from_shape_vec(IxDyn(&[2]), vec![f32::NAN, 0.0]).unwrap();
        let before = opt.slots[0].value.clone();
        let e = opt.step(&[bad], 1e-3).unwrap_err().to_string();
        assert!(e.contains("`a`") && e.contains("step 1"), "{e}");
        assert_eq!(opt.slots[0].value, before);
    }

    #[test]
    fn schedule_warms_up_then_decays() {
        let s = Schedule { peak: 1.0, warmup: 10, total: 110, min_ratio: 0.1 };
        assert!((s.lr(0) - 0.1).abs() < 1e-6);
        assert!((s.lr(9) - 1.0).abs() < 1e-6);
        assert!((s.lr(10) - 1.0).abs() < 1e-6);
        assert!((s.lr(60) - 0.55).abs() < 1e-5);
        assert!((s.lr(110) - 0.1).abs() < 1e-6);
        assert!((s.lr(500) - 0.1).abs() < 1e-6);
        for i in 10..110 {
            assert!(s.lr(i + 1) <= s.lr(i) + 1e-7);
        }
    }

    #[test]
    fn decay_groups() {
        assert!(no_decay("layers.0.jet.o_norm.weight", &[32]));
        assert!(no_decay("a_log", &[4]));
        assert!(!no_decay("layers.0.jet.q_proj.weight", &[64, 48]));
    }
}
