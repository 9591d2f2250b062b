//! Hardware-aware search (Jet-Nemotron's step 4): at a fixed layout, the decode cost of a
//! linear layer is set by its recurrent state, H x d_k x d_v per layer; so the cache is
//! held fixed and the (heads, d_k, d_v) that keep it are compared by accuracy after the
//! same short distillation, with parameters, cache bytes and measured decode throughput
//! beside. The points on the Pareto front (throughput, objective) are marked, and the pick
//! is the best objective.
use std::path::Path;

use jetc_eval::Score;
use plotters::coord::Shift;
use plotters::prelude::*;
use serde_json::json;

use crate::error::{err, Result};

/// A mixer shape.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Point {
    pub heads: usize,
    pub dk: usize,
    pub dv: usize,
}

impl Point {
    pub fn state(&self) -> usize {
        self.heads * self.dk * self.dv
    }

    /// Parses `H:dk:dv`.
    pub fn parse(s: &str) -> Result<Point> {
        let p: Vec<usize> = s.split(':').map(|x| x.trim().parse::<usize>()).collect::<std::result::Result<_, _>>().map_err(|_| err(format!("point `{s}`: give heads:d_k:d_v, e.g. 9:48:128")))?;
        match p[..] {
            [heads, dk, dv] if heads > 0 && dk > 0 && dv > 0 => Ok(Point { heads, dk, dv }),
            _ => Err(err(format!("point `{s}`: give three positive numbers heads:d_k:d_v, e.g. 9:48:128"))),
        }
    }

    pub fn name(&self) -> String {
        format!("{}:{}:{}", self.heads, self.dk, self.dv)
    }
}

/// Up to `max` shapes with the state of `base` (d_k a multiple of 8 in 16..=256, d_v of 16
/// in 32..=512, heads 1..=4 x base): for each head count the (d_k, d_v) nearest the base's
/// d_k/d_v ratio, then head counts spread evenly, the base always among them.
pub fn equal_state_points(base: Point, max: usize) -> Vec<Point> {
    let target = base.state();
    let ratio = (base.dk as f64 / base.dv as f64).ln();
    let mut per_head: Vec<Point> = Vec::new();
    for heads in 1..=4 * base.heads {
        if target % heads != 0 {
            continue;
        }
        let kv = target / heads;
        let best = (2..=32)
            .map(|k| 8 * k)
            .filter(|dk| kv % dk == 0)
            .map(|dk| Point { heads, dk, dv: kv / dk })
            .filter(|p| p.dv % 16 == 0 && (32..=512).contains(&p.dv))
            .min_by(|a, b| {
                let d = |p: &Point| ((p.dk as f64 / p.dv as f64).ln() - ratio).abs();
                d(a).total_cmp(&d(b))
            });
        if let Some(p) = best {
            per_head.push(if heads == base.heads { base } else { p });
        }
    }
    if !per_head.contains(&base) {
        per_head.push(base);
        per_head.sort();
    }
    if per_head.len() <= max {
        return per_head;
    }
    let mut keep: Vec<Point> = (0..max).map(|i| per_head[i * (per_head.len() - 1) / (max - 1).max(1)]).collect();
    if !keep.contains(&base) {
        // Replace the kept point nearest the base's head count.
        let k = (0..keep.len()).min_by_key(|&i| keep[i].heads.abs_diff(base.heads)).unwrap_or(0);
        keep[k] = base;
    }
    keep.sort();
    keep.dedup();
    keep
}

/// One measured point.
#[derive(Clone, Debug, PartialEq)]
pub struct Measured {
    pub point: Point,
    pub params: usize,
    pub cache_bytes: usize,
    pub decode_tokens_per_s: f64,
    pub train_tokens: u64,
    pub train_tokens_per_s: f64,
    pub scores: Vec<Score>,
    pub objective: f64,
}

impl Measured {
    pub fn to_json(&self, pareto: bool) -> serde_json::Value {
        json!({
            "heads": self.point.heads, "dk": self.point.dk, "dv": self.point.dv, "state_per_layer": self.point.state(),
            "params": self.params, "cache_bytes": self.cache_bytes, "decode_tokens_per_s": self.decode_tokens_per_s,
            "train_tokens": self.train_tokens, "train_tokens_per_s": self.train_tokens_per_s,
            "objective": self.objective, "pareto": pareto, "scores": self.scores,
        })
    }
}

/// Which points no other point beats on both decode throughput and objective.
pub fn pareto(points: &[Measured]) -> Vec<bool> {
    points
        .iter()
        .map(|p| {
            !points.iter().any(|q| {
                q.decode_tokens_per_s >= p.decode_tokens_per_s && q.objective >= p.objective && (q.decode_tokens_per_s > p.decode_tokens_per_s || q.objective > p.objective)
            })
        })
        .collect()
}

/// The pick: the best objective, then the faster.
pub fn pick(points: &[Measured]) -> Option<usize> {
    (0..points.len()).max_by(|&a, &b| {
        let (pa, pb) = (&points[a], &points[b]);
        pa.objective.total_cmp(&pb.objective).then(pa.decode_tokens_per_s.total_cmp(&pb.decode_tokens_per_s)).then(b.cmp(&a))
    })
}

/// Objective against decode throughput, a point per shape (Pareto points filled), into
/// `png` and `svg`; returns whether the chart has text.
pub fn plot(points: &[Measured], objective: &str, png: &Path, svg: &Path, title: &str) -> Result<bool> {
    let front = pareto(points);
    let text = jetc_train::plot::register_font();
    {
        let root = SVGBackend::new(svg, (760, 460)).into_drawing_area();
        draw(&root, points, &front, objective, title, text).map_err(|e| err(format!("{}: {e}", svg.display())))?;
    }
    let root = BitMapBackend::new(png, (760, 460)).into_drawing_area();
    draw(&root, points, &front, objective, title, text).map_err(|e| err(format!("{}: {e}", png.display())))?;
    Ok(text)
}

fn draw<DB: DrawingBackend>(root: &DrawingArea<DB, Shift>, points: &[Measured], front: &[bool], objective: &str, title: &str, text: bool) -> std::result::Result<(), String> {
    root.fill(&WHITE).map_err(|e| e.to_string())?;
    let xs: Vec<f64> = points.iter().map(|p| p.decode_tokens_per_s).collect();
    let ys: Vec<f64> = points.iter().map(|p| p.objective).collect();
    let span = |v: &[f64]| {
        let (lo, hi) = v.iter().fold((f64::INFINITY, f64::NEG_INFINITY), |(l, h), &x| (l.min(x), h.max(x)));
        let pad = ((hi - lo).abs() * 0.15).max(1e-3 * hi.abs().max(1.0));
        if lo.is_finite() { (lo - pad, hi + pad) } else { (0.0, 1.0) }
    };
    let ((x0, x1), (y0, y1)) = (span(&xs), span(&ys));
    let mut builder = ChartBuilder::on(root);
    builder.margin(14).x_label_area_size(if text { 40 } else { 8 }).y_label_area_size(if text { 64 } else { 8 });
    if text {
        builder.caption(title, ("sans-serif", 18));
    }
    let mut chart = builder.build_cartesian_2d(x0..x1, y0..y1).map_err(|e| e.to_string())?;
    let mut mesh = chart.configure_mesh();
    if text {
        mesh.x_desc("decode tokens/s (CPU executor)").y_desc(objective);
    } else {
        mesh.disable_x_axis().disable_y_axis();
    }
    mesh.draw().map_err(|e| e.to_string())?;
    let color = RGBColor(84, 39, 136);
    for (p, &f) in points.iter().zip(front) {
        let at = (p.decode_tokens_per_s, p.objective);
        if f {
            chart.draw_series(std::iter::once(Circle::new(at, 6, color.filled()))).map_err(|e| e.to_string())?;
        } else {
            chart.draw_series(std::iter::once(Circle::new(at, 6, color.stroke_width(2)))).map_err(|e| e.to_string())?;
        }
        if text {
            chart.draw_series(std::iter::once(Text::new(p.point.name(), at, ("sans-serif", 12)))).map_err(|e| e.to_string())?;
        }
    }
    root.present().map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn equal_state_points_keep_the_state_and_the_base() {
        let base = Point { heads: 9, dk: 48, dv: 128 };
        let pts = equal_state_points(base, 8);
        assert!(pts.len() >= 6 && pts.len() <= 8, "{pts:?}");
        assert!(pts.contains(&base));
        for p in &pts {
            assert_eq!(p.state(), base.state(), "{p:?}");
            assert!(p.dk % 8 == 0 && p.dv % 16 == 0);
        }
        let heads: Vec<usize> = pts.iter().map(|p| p.heads).collect();
        assert!(heads.windows(2).all(|w| w[0] < w[1]), "one point per head count: {heads:?}");
        assert_eq!(equal_state_points(base, 100).len(), equal_state_points(base, 100).iter().map(|p| p.heads).collect::<std::collections::BTreeSet<_>>().len());
        assert_eq!(Point::parse("6:72:128").unwrap(), Point { heads: 6, dk: 72, dv: 128 });
        assert!(Point::parse("6:72").is_err() && Point::parse("0:8:8").is_err() && Point::parse("a:b:c").is_err());
    }

    #[test]
    fn pareto_front_and_pick() {
        let m = |h: usize, tps: f64, obj: f64| Measured {
            point: Point { heads: h, dk: 8, dv: 16 },
            params: 1,
            cache_bytes: 1,
            decode_tokens_per_s: tps,
            train_tokens: 1,
            train_tokens_per_s: 1.0,
            scores: vec![],
            objective: obj,
        };
        let pts = vec![m(1, 10.0, -4.0), m(2, 12.0, -4.5), m(3, 9.0, -4.1), m(4, 12.0, -3.9)];
        assert_eq!(pareto(&pts), vec![false, false, false, true]);
        assert_eq!(pick(&pts), Some(3));
        let pts = vec![m(1, 10.0, -4.0), m(2, 12.0, -4.5)];
        assert_eq!(pareto(&pts), vec![true, true]);
        assert_eq!(pick(&pts), Some(0));
        let dir = std::env::temp_dir().join(format!("jetc-hw-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        plot(&pts, "lm nll (negated)", &dir.join("p.png"), &dir.join("p.svg"), "t").unwrap();
        assert!(std::fs::read(dir.join("p.png")).unwrap().starts_with(&[0x89, b'P']));
        std::fs::remove_dir_all(&dir).ok();
    }
}
