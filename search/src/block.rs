//! Block selection: at one placement, each linear candidate (JetBlock, Gated DeltaNet, ...)
//! distilled with the same recipe and tokens, then scored on the same tasks. The table
//! holds each candidate's scores, its training throughput (the paper reports both) and its
//! block parameters; the chart shows one metric per candidate as bars.
use std::path::Path;

use jetc_eval::Score;
use plotters::coord::Shift;
use plotters::prelude::*;
use serde_json::json;

use crate::error::{err, Result};

/// One candidate's result.
#[derive(Clone, Debug, PartialEq)]
pub struct Candidate {
    pub block: String,
    pub tokens: u64,
    pub train_seconds: f64,
    pub tokens_per_s: f64,
    /// Learned weights of the candidate's blocks.
    pub block_params: usize,
    /// The run's internal held-out NLL after training.
    pub heldout_nll: Option<f64>,
    pub scores: Vec<Score>,
}

impl Candidate {
    pub fn metric(&self, task: &str, metric: &str) -> Option<(f64, Option<f64>)> {
        self.scores.iter().find(|s| s.task == task)?.metrics.iter().find(|m| m.name == metric).map(|m| (m.value, m.stderr))
    }

    pub fn to_json(&self) -> serde_json::Value {
        json!({
            "block": self.block, "tokens": self.tokens, "train_seconds": self.train_seconds, "tokens_per_s": self.tokens_per_s,
            "block_params": self.block_params, "heldout_nll": self.heldout_nll, "scores": self.scores,
        })
    }
}

/// Bars of `metric` of `task` per candidate (with stderr whiskers), into `png` and `svg`;
/// returns whether the chart has text.
pub fn plot(cands: &[Candidate], task: &str, metric: &str, png: &Path, svg: &Path, title: &str) -> Result<bool> {
    let values: Vec<(String, f64, f64)> = cands
        .iter()
        .map(|c| {
            let (v, e) = c.metric(task, metric).ok_or_else(|| err(format!("block {}: no {metric} of task {task}", c.block)))?;
            Ok((c.block.clone(), v, e.unwrap_or(0.0)))
        })
        .collect::<Result<_>>()?;
    let text = jetc_train::plot::register_font();
    let label = format!("{task} {metric}");
    {
        let root = SVGBackend::new(svg, (720, 420)).into_drawing_area();
        draw(&root, &values, &label, title, text).map_err(|e| err(format!("{}: {e}", svg.display())))?;
    }
    let root = BitMapBackend::new(png, (720, 420)).into_drawing_area();
    draw(&root, &values, &label, title, text).map_err(|e| err(format!("{}: {e}", png.display())))?;
    Ok(text)
}

fn draw<DB: DrawingBackend>(root: &DrawingArea<DB, Shift>, values: &[(String, f64, f64)], label: &str, title: &str, text: bool) -> std::result::Result<(), String> {
    root.fill(&WHITE).map_err(|e| e.to_string())?;
    let hi = values.iter().map(|v| v.1 + v.2).fold(0.0f64, f64::max).max(1e-9) * 1.15;
    let lo = values.iter().map(|v| v.1 - v.2).fold(0.0f64, f64::min);
    let mut builder = ChartBuilder::on(root);
    builder.margin(14).x_label_area_size(if text { 40 } else { 8 }).y_label_area_size(if text { 60 } else { 8 });
    if text {
        builder.caption(title, ("sans-serif", 18));
    }
    let n = values.len().max(1);
    let mut chart = builder.build_cartesian_2d(0f64..n as f64, lo..hi).map_err(|e| e.to_string())?;
    let names: Vec<String> = values.iter().map(|v| v.0.clone()).collect();
    let mut mesh = chart.configure_mesh();
    mesh.disable_x_mesh().x_labels(n * 2 + 1).y_desc(label);
    let fmt = move |x: &f64| {
        let i = x.floor() as usize;
        if (x - x.floor() - 0.5).abs() < 1e-6 && i < names.len() {
            names[i].clone()
        } else {
            String::new()
        }
    };
    mesh.x_label_formatter(&fmt);
    if !text {
        mesh.disable_x_axis().disable_y_axis();
    }
    mesh.draw().map_err(|e| e.to_string())?;
    for (i, (_, v, e)) in values.iter().enumerate() {
        let x = i as f64;
        chart.draw_series(std::iter::once(Rectangle::new([(x + 0.2, 0.0f64.max(lo)), (x + 0.8, *v)], RGBColor(84, 39, 136).mix(0.8).filled()))).map_err(|e| e.to_string())?;
        if *e > 0.0 {
            chart.draw_series(std::iter::once(PathElement::new(vec![(x + 0.5, v - e), (x + 0.5, v + e)], BLACK.stroke_width(2)))).map_err(|e| e.to_string())?;
        }
    }
    root.present().map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use jetc_eval::Metric;

    #[test]
    fn metric_lookup_and_chart() {
        let c = |b: &str, v: f64| Candidate {
            block: b.into(),
            tokens: 100,
            train_seconds: 1.0,
            tokens_per_s: 100.0,
            block_params: 10,
            heldout_nll: Some(4.0),
            scores: vec![Score { task: "lm".into(), examples: 2, metrics: vec![Metric { name: "nll".into(), value: v, stderr: Some(0.1), values: vec![] }] }],
        };
        let cands = vec![c("jetblock", 4.0), c("gated-deltanet", 4.2)];
        assert_eq!(cands[1].metric("lm", "nll"), Some((4.2, Some(0.1))));
        assert_eq!(cands[0].metric("lm", "acc"), None);
        let dir = std::env::temp_dir().join(format!("jetc-block-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        plot(&cands, "lm", "nll", &dir.join("b.png"), &dir.join("b.svg"), "t").unwrap();
        assert!(std::fs::read(dir.join("b.png")).unwrap().starts_with(&[0x89, b'P']));
        assert!(plot(&cands, "lm", "acc", &dir.join("c.png"), &dir.join("c.svg"), "t").unwrap_err().to_string().contains("no acc"));
        std::fs::remove_dir_all(&dir).ok();
    }
}
