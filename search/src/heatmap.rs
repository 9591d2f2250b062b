//! The per-layer heat map of PostNAS: for each layer `l`, the subnet with only layer `l` on
//! full attention (every other layer the supernet's linear block) is scored on each task.
//! A row per (task, metric), a cell per layer; beside it the all-linear subnet (no
//! attention at all), the level every cell's gain is measured from.
//!
//! From the cells come the findings the paper's figure is read for: which layers carry a
//! task's score (the fewest layers whose gains over the all-linear subnet add up to half of
//! all the gains), and how far two tasks' important layers overlap.
//!
//! Written as JSON (every metric with its stderr), PNG and SVG (plotters): rows coloured on
//! their own scale, darker = better, so a loss row and an accuracy row read the same way.
use std::path::Path;

use jetc_eval::Score;
use plotters::coord::Shift;
use plotters::prelude::*;
use serde_json::json;

use crate::error::{err, Result};

/// The scores of one subnet: `layer` on full attention, or none (the all-linear subnet).
#[derive(Clone, Debug, PartialEq)]
pub struct Cell {
    pub layer: Option<usize>,
    pub scores: Vec<Score>,
    pub seconds: f64,
}

impl Cell {
    pub fn to_json(&self) -> serde_json::Value {
        json!({"layer": self.layer, "scores": self.scores, "seconds": self.seconds})
    }

    /// Reads what [`Cell::to_json`] wrote.
    pub fn from_json(v: &serde_json::Value) -> Result<Cell> {
        let bad = || err(format!("not a heat-map cell: {v}"));
        let layer = match &v["layer"] {
            serde_json::Value::Null => None,
            x => Some(x.as_u64().ok_or_else(bad)? as usize),
        };
        let scores = scores_from_json(&v["scores"])?;
        Ok(Cell {
            layer,
            scores,
            seconds: v["seconds"].as_f64().unwrap_or(0.0),
        })
    }
}

/// Reads scores as `serde_json::to_value(Vec<Score>)` wrote them.
pub fn scores_from_json(v: &serde_json::Value) -> Result<Vec<Score>> {
    let bad = || err(format!("not a list of task scores: {v}"));
    let mut scores = Vec::new();
    for s in v.as_array().ok_or_else(bad)? {
        let metrics = s["metrics"]
            .as_array()
            .ok_or_else(bad)?
            .iter()
            .map(|m| {
                Ok(jetc_eval::Metric {
                    name: m["name"].as_str().ok_or_else(bad)?.to_string(),
                    value: m["value"].as_f64().ok_or_else(bad)?,
                    stderr: m["stderr"].as_f64(),
                    values: m["values"].as_array().map(|a| a.iter().filter_map(|x| x.as_f64()).collect()).unwrap_or_default(),
                })
            })
            .collect::<Result<Vec<_>>>()?;
        scores.push(Score {
            task: s["task"].as_str().ok_or_else(bad)?.to_string(),
            examples: s["examples"].as_u64().ok_or_else(bad)? as usize,
            metrics,
        });
    }
    Ok(scores)
}

/// The metrics a task's rows show, and whether higher is better.
pub fn row_metrics(task: &str) -> &'static [(&'static str, bool)] {
    match task {
        "lm" => &[("nll", false)],
        t if jetc_eval::GENERATIVE_TASKS.contains(&t) => &[("em", true), ("answer_loss", false)],
        _ => &[("acc", true), ("answer_loss", false)],
    }
}

/// One row of the map.
#[derive(Clone, Debug, PartialEq)]
pub struct Row {
    pub task: String,
    pub metric: String,
    pub higher_is_better: bool,
    /// By layer, in the order of [`HeatMap::layers`].
    pub values: Vec<f64>,
    pub stderr: Vec<Option<f64>>,
    /// The all-linear subnet's value.
    pub baseline: Option<f64>,
}

impl Row {
    /// Each layer's gain over the all-linear subnet, signed so that positive is better
    /// (over the row's worst cell when there is no baseline).
    pub fn gains(&self) -> Vec<f64> {
        let sign = if self.higher_is_better { 1.0 } else { -1.0 };
        let base = self.baseline.unwrap_or_else(|| {
            self.values
                .iter()
                .map(|v| sign * v)
                .fold(f64::INFINITY, f64::min)
                * sign
        });
        self.values.iter().map(|v| sign * (v - base)).collect()
    }

    /// The layers by gain, best first.
    pub fn ranked(&self, layers: &[usize]) -> Vec<(usize, f64)> {
        let mut r: Vec<(usize, f64)> = layers.iter().copied().zip(self.gains()).collect();
        r.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
        r
    }

    /// The fewest layers whose positive gains add up to half of all positive gains (none when
    /// no layer gains).
    pub fn carriers(&self, layers: &[usize]) -> Vec<usize> {
        let ranked = self.ranked(layers);
        let total: f64 = ranked.iter().map(|r| r.1.max(0.0)).sum();
        let mut out = Vec::new();
        let mut sum = 0.0;
        for (l, g) in ranked {
            if total <= 0.0 || g <= 0.0 || sum >= 0.5 * total {
                break;
            }
            sum += g;
            out.push(l);
        }
        out
    }
}

/// The heat map of a supernet.
#[derive(Clone, Debug, PartialEq)]
pub struct HeatMap {
    /// The model's layer count.
    pub n_layers: usize,
    /// The layers mapped (columns).
    pub layers: Vec<usize>,
    /// The linear block of the other layers.
    pub block: String,
    pub cells: Vec<Cell>,
}

impl HeatMap {
    fn cell(&self, layer: Option<usize>) -> Option<&Cell> {
        self.cells.iter().find(|c| c.layer == layer)
    }

    /// The tasks, in the order the cells hold them.
    pub fn tasks(&self) -> Vec<String> {
        self.cells
            .first()
            .map(|c| c.scores.iter().map(|s| s.task.clone()).collect())
            .unwrap_or_default()
    }

    /// Every (task, metric) row; an error when a layer's cell is missing.
    pub fn rows(&self) -> Result<Vec<Row>> {
        let mut rows = Vec::new();
        for task in self.tasks() {
            for &(metric, higher) in row_metrics(&task) {
                let get = |c: &Cell| {
                    c.scores
                        .iter()
                        .find(|s| s.task == task)
                        .and_then(|s| s.metrics.iter().find(|m| m.name == metric))
                        .cloned()
                };
                let mut values = Vec::new();
                let mut stderr = Vec::new();
                for &l in &self.layers {
                    let cell = self
                        .cell(Some(l))
                        .ok_or_else(|| err(format!("heat map: no scores for layer {l}")))?;
                    let m = get(cell).ok_or_else(|| {
                        err(format!(
                            "heat map: layer {l} has no `{metric}` of task {task}"
                        ))
                    })?;
                    values.push(m.value);
                    stderr.push(m.stderr);
                }
                let baseline = self.cell(None).and_then(|c| get(c)).map(|m| m.value);
                rows.push(Row {
                    task: task.clone(),
                    metric: metric.to_string(),
                    higher_is_better: higher,
                    values,
                    stderr,
                    baseline,
                });
            }
        }
        Ok(rows)
    }

    /// Which layers carry each row, and how far rows' carriers and top layers overlap.
    pub fn findings(&self, top: usize) -> Result<serde_json::Value> {
        let rows = self.rows()?;
        let per_row: Vec<serde_json::Value> = rows
            .iter()
            .map(|r| {
                let ranked = r.ranked(&self.layers);
                json!({
                    "task": r.task, "metric": r.metric,
                    "best_layer": ranked.first().map(|x| x.0),
                    "top_layers": ranked.iter().take(top).map(|x| x.0).collect::<Vec<_>>(),
                    "top_gains": ranked.iter().take(top).map(|x| x.1).collect::<Vec<_>>(),
                    "carriers_of_half_the_gain": r.carriers(&self.layers),
                    "spread": r.values.iter().cloned().fold(f64::NEG_INFINITY, f64::max) - r.values.iter().cloned().fold(f64::INFINITY, f64::min),
                })
            })
            .collect();
        let mut overlaps = Vec::new();
        for i in 0..rows.len() {
            for j in i + 1..rows.len() {
                let (a, b) = (&rows[i], &rows[j]);
                let ta: Vec<usize> = a
                    .ranked(&self.layers)
                    .iter()
                    .take(top)
                    .map(|x| x.0)
                    .collect();
                let tb: Vec<usize> = b
                    .ranked(&self.layers)
                    .iter()
                    .take(top)
                    .map(|x| x.0)
                    .collect();
                let shared: Vec<usize> = ta.iter().copied().filter(|l| tb.contains(l)).collect();
                overlaps.push(json!({
                    "rows": [format!("{} {}", a.task, a.metric), format!("{} {}", b.task, b.metric)],
                    "top": top, "shared_top_layers": shared,
                    "gain_correlation": pearson(&a.gains(), &b.gains()),
                }));
            }
        }
        Ok(json!({"rows": per_row, "overlaps": overlaps}))
    }

    pub fn to_json(&self) -> Result<serde_json::Value> {
        let rows: Vec<serde_json::Value> = self
            .rows()?
            .iter()
            .map(|r| json!({"task": r.task, "metric": r.metric, "higher_is_better": r.higher_is_better, "values": r.values, "stderr": r.stderr, "all_linear": r.baseline}))
            .collect();
        Ok(json!({
            "n_layers": self.n_layers, "layers": self.layers, "block": self.block,
            "rows": rows,
            "findings": self.findings(5.min(self.layers.len()))?,
            "cells": self.cells.iter().map(Cell::to_json).collect::<Vec<_>>(),
        }))
    }

    /// Writes the map as `png` and `svg`; returns whether it has text (a font was found).
    pub fn plot(&self, png: &Path, svg: &Path, title: &str) -> Result<bool> {
        let rows = self.rows()?;
        let text = jetc_train::plot::register_font();
        let (w, h) = (
            (160 + 34 * self.layers.len() as u32 + 40).max(640),
            90 + 44 * rows.len() as u32,
        );
        {
            let root = SVGBackend::new(svg, (w, h)).into_drawing_area();
            draw(&root, self, &rows, title, text)
                .map_err(|e| err(format!("{}: {e}", svg.display())))?;
        }
        let root = BitMapBackend::new(png, (w, h)).into_drawing_area();
        draw(&root, self, &rows, title, text)
            .map_err(|e| err(format!("{}: {e}", png.display())))?;
        Ok(text)
    }
}

/// Pearson correlation (None when either side is constant).
fn pearson(a: &[f64], b: &[f64]) -> Option<f64> {
    let n = a.len().min(b.len()) as f64;
    if n < 2.0 {
        return None;
    }
    let (ma, mb) = (a.iter().sum::<f64>() / n, b.iter().sum::<f64>() / n);
    let cov: f64 = a.iter().zip(b).map(|(x, y)| (x - ma) * (y - mb)).sum();
    let va: f64 = a.iter().map(|x| (x - ma).powi(2)).sum();
    let vb: f64 = b.iter().map(|y| (y - mb).powi(2)).sum();
    (va > 0.0 && vb > 0.0).then(|| cov / (va * vb).sqrt())
}

/// A colour from light yellow (t = 0, worst of the row) to dark purple (t = 1, best).
fn shade(t: f64) -> RGBColor {
    const STOPS: [(f64, (f64, f64, f64)); 4] = [
        (0.0, (255.0, 247.0, 188.0)),
        (0.35, (254.0, 153.0, 41.0)),
        (0.7, (204.0, 76.0, 2.0)),
        (1.0, (84.0, 39.0, 136.0)),
    ];
    let t = t.clamp(0.0, 1.0);
    let k = STOPS
        .iter()
        .position(|s| s.0 >= t)
        .unwrap_or(STOPS.len() - 1)
        .max(1);
    let ((t0, c0), (t1, c1)) = (STOPS[k - 1], STOPS[k]);
    let f = if t1 > t0 { (t - t0) / (t1 - t0) } else { 0.0 };
    let mix = |a: f64, b: f64| (a + (b - a) * f).round() as u8;
    RGBColor(mix(c0.0, c1.0), mix(c0.1, c1.1), mix(c0.2, c1.2))
}

fn draw<DB: DrawingBackend>(
    root: &DrawingArea<DB, Shift>,
    map: &HeatMap,
    rows: &[Row],
    title: &str,
    text: bool,
) -> std::result::Result<(), String> {
    let e = |x: plotters::drawing::DrawingAreaErrorKind<DB::ErrorType>| x.to_string();
    root.fill(&WHITE).map_err(e)?;
    let (left, top, cw, ch) = (160i32, 50i32, 34i32, 44i32);
    if text {
        root.draw(&Text::new(title.to_string(), (10, 14), ("sans-serif", 18)))
            .map_err(e)?;
    }
    for (r, row) in rows.iter().enumerate() {
        let gains = row.gains();
        let (lo, hi) = gains
            .iter()
            .fold((f64::INFINITY, f64::NEG_INFINITY), |(l, h), &g| {
                (l.min(g), h.max(g))
            });
        let y = top + r as i32 * ch;
        if text {
            root.draw(&Text::new(
                format!("{} {}", row.task, row.metric.replace('_', " ")),
                (8, y + ch / 2 - 7),
                ("sans-serif", 13),
            ))
            .map_err(e)?;
        }
        for (c, (&v, g)) in row.values.iter().zip(&gains).enumerate() {
            let t = if hi > lo { (g - lo) / (hi - lo) } else { 0.5 };
            let x = left + c as i32 * cw;
            root.draw(&Rectangle::new(
                [(x, y), (x + cw - 1, y + ch - 1)],
                shade(t).filled(),
            ))
            .map_err(e)?;
            if text {
                let label = if v.abs() >= 10.0 {
                    format!("{v:.1}")
                } else {
                    format!("{v:.2}")
                };
                let color = if t > 0.6 { WHITE } else { BLACK };
                root.draw(&Text::new(
                    label,
                    (x + 3, y + ch / 2 - 5),
                    ("sans-serif", 10).into_font().color(&color),
                ))
                .map_err(e)?;
            }
        }
    }
    if text {
        let y = top + rows.len() as i32 * ch + 6;
        for (c, l) in map.layers.iter().enumerate() {
            root.draw(&Text::new(
                l.to_string(),
                (left + c as i32 * cw + cw / 2 - 6, y),
                ("sans-serif", 12),
            ))
            .map_err(e)?;
        }
        root.draw(&Text::new(
            "layer on full attention (the others: ".to_string()
                + &map.block
                + "); darker = better, each row on its own scale",
            (left, y + 18),
            ("sans-serif", 12),
        ))
        .map_err(e)?;
    }
    root.present().map_err(e)
}

#[cfg(test)]
mod tests {
    use super::*;
    use jetc_eval::Metric;

    fn score(task: &str, metrics: &[(&str, f64)]) -> Score {
        Score {
            task: task.into(),
            examples: 4,
            metrics: metrics
                .iter()
                .map(|&(n, v)| Metric {
                    name: n.into(),
                    value: v,
                    stderr: Some(0.1),
                    values: vec![],
                })
                .collect(),
        }
    }

    /// Three layers: layer 2 carries retrieval, layer 0 the lm loss.
    fn map() -> HeatMap {
        let cell = |layer: Option<usize>, nll: f64, acc: f64, loss: f64| Cell {
            layer,
            scores: vec![
                score("lm", &[("nll", nll)]),
                score("passkey", &[("acc", acc), ("answer_loss", loss)]),
            ],
            seconds: 1.0,
        };
        HeatMap {
            n_layers: 3,
            layers: vec![0, 1, 2],
            block: "jetblock".into(),
            cells: vec![
                cell(None, 5.0, 0.0, 9.0),
                cell(Some(0), 4.0, 0.0, 8.5),
                cell(Some(1), 4.9, 0.1, 8.0),
                cell(Some(2), 4.8, 0.9, 2.0),
            ],
        }
    }

    #[test]
    fn rows_gains_and_carriers() {
        let m = map();
        let rows = m.rows().unwrap();
        assert_eq!(rows.len(), 3);
        assert_eq!(
            (
                rows[0].task.as_str(),
                rows[0].metric.as_str(),
                rows[0].higher_is_better
            ),
            ("lm", "nll", false)
        );
        let g = rows[0].gains();
        assert!(
            (g[0] - 1.0).abs() < 1e-12 && (g[1] - 0.1).abs() < 1e-9 && (g[2] - 0.2).abs() < 1e-9,
            "{g:?}"
        );
        assert_eq!(rows[0].carriers(&m.layers), vec![0]);
        assert_eq!(rows[1].carriers(&m.layers), vec![2], "passkey acc");
        assert_eq!(
            rows[2].ranked(&m.layers)[0].0,
            2,
            "passkey loss: layer 2 best"
        );
        let f = m.findings(1).unwrap();
        assert_eq!(f["rows"][0]["best_layer"], 0);
        assert_eq!(
            f["overlaps"][2]["shared_top_layers"],
            json!([2]),
            "passkey acc and loss share layer 2"
        );
        assert_eq!(
            f["overlaps"][0]["shared_top_layers"],
            json!([]),
            "lm and passkey do not"
        );
    }

    #[test]
    fn a_missing_layer_is_an_error_and_cells_round_trip() {
        let mut m = map();
        let c = m.cells[1].clone();
        assert_eq!(Cell::from_json(&c.to_json()).unwrap(), c);
        m.cells.remove(2);
        assert!(m.rows().unwrap_err().to_string().contains("layer 1"));
    }

    #[test]
    fn writes_png_and_svg() {
        let dir = std::env::temp_dir().join(format!("jetc-heatmap-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let (png, svg) = (dir.join("h.png"), dir.join("h.svg"));
        map().plot(&png, &svg, "test").unwrap();
        assert!(std::fs::read(&png)
            .unwrap()
            .starts_with(&[0x89, b'P', b'N', b'G']));
        assert!(std::fs::read_to_string(&svg).unwrap().contains("<svg"));
        std::fs::remove_dir_all(&dir).ok();
    }

    #[test]
    fn shades_run_from_light_to_dark() {
        let lum = |c: RGBColor| c.0 as f64 * 0.3 + c.1 as f64 * 0.59 + c.2 as f64 * 0.11;
        let ts = [0.0, 0.2, 0.5, 0.8, 1.0];
        for w in ts.windows(2) {
            assert!(lum(shade(w[0])) > lum(shade(w[1])), "{w:?}");
        }
    }
}
