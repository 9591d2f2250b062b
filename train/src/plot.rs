//! The loss curve of a run as PNG and SVG (plotters): the mean loss per step, and the
//! held-out loss where measured; and held-out NLL curves of several runs against training
//! tokens, beside reference levels ([`nll_curves`]); and labelled (x, y) curves on a linear or
//! logarithmic x axis ([`xy_curves`]: throughput against context).
//!
//! Labels need a font (plotters measures text with it, for both backends): the first
//! DejaVu/Liberation/Noto sans font found in the usual system places, or the file `JETC_FONT`
//! names. Without one the charts are drawn without text (curves and grid only).
use std::path::Path;

use plotters::coord::Shift;
use plotters::prelude::*;

use crate::error::{Result, TrainError};

const FONT_PATHS: &[&str] = &[
    "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf",
    "/usr/share/fonts/TTF/DejaVuSans.ttf",
    "/usr/share/fonts/dejavu/DejaVuSans.ttf",
    "/usr/share/fonts/truetype/liberation/LiberationSans-Regular.ttf",
    "/usr/share/fonts/truetype/noto/NotoSans-Regular.ttf",
    "/System/Library/Fonts/Supplemental/Arial.ttf",
];

/// Registers a sans-serif font for chart text (once); false when none is found.
pub fn register_font() -> bool {
    static DONE: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *DONE.get_or_init(|| {
        let env = std::env::var("JETC_FONT").ok();
        for p in env.iter().map(String::as_str).chain(FONT_PATHS.iter().copied()) {
            if let Ok(bytes) = std::fs::read(p) {
                let bytes: &'static [u8] = Box::leak(bytes.into_boxed_slice());
                if plotters::style::register_font("sans-serif", FontStyle::Normal, bytes).is_ok() {
                    return true;
                }
            }
        }
        false
    })
}

fn draw<DB: DrawingBackend>(root: &DrawingArea<DB, Shift>, train: &[(u64, f32)], heldout: &[(u64, f32)], title: &str, text: bool) -> std::result::Result<(), String> {
    root.fill(&WHITE).map_err(|e| e.to_string())?;
    let max_step = train.iter().chain(heldout).map(|p| p.0).max().unwrap_or(1).max(1);
    let (lo, hi) = train.iter().chain(heldout).fold((f32::INFINITY, f32::NEG_INFINITY), |(l, h), p| (l.min(p.1), h.max(p.1)));
    let (lo, hi) = if lo.is_finite() && hi > lo { (lo.min(0.0), hi * 1.05) } else { (0.0, 1.0) };
    let mut builder = ChartBuilder::on(root);
    builder.margin(12).x_label_area_size(if text { 36 } else { 8 }).y_label_area_size(if text { 56 } else { 8 });
    if text {
        builder.caption(title, ("sans-serif", 20));
    }
    let mut chart = builder.build_cartesian_2d(0u64..max_step, lo..hi).map_err(|e| e.to_string())?;
    let mut mesh = chart.configure_mesh();
    if text {
        mesh.x_desc("step").y_desc("loss (normalized MSE)");
    } else {
        mesh.disable_x_axis().disable_y_axis();
    }
    mesh.draw().map_err(|e| e.to_string())?;
    let s = chart.draw_series(LineSeries::new(train.iter().copied(), &BLUE)).map_err(|e| e.to_string())?;
    if text {
        s.label("train").legend(|(x, y)| PathElement::new(vec![(x, y), (x + 16, y)], BLUE));
    }
    if !heldout.is_empty() {
        let s = chart
            .draw_series(heldout.iter().map(|&(x, y)| Circle::new((x, y), 4, RED.filled())))
            .map_err(|e| e.to_string())?;
        if text {
            s.label("held-out").legend(|(x, y)| Circle::new((x + 8, y), 4, RED.filled()));
        }
    }
    if text {
        chart.configure_series_labels().background_style(WHITE.mix(0.8)).border_style(BLACK).draw().map_err(|e| e.to_string())?;
    }
    root.present().map_err(|e| e.to_string())
}

/// Draws one chart into `svg` and `png` (the same drawing twice); returns whether it has
/// text (a font was found).
fn render(png: &Path, svg: &Path, draw_on: impl Fn(&DrawingArea<SVGBackend, Shift>, bool) -> std::result::Result<(), String>, draw_png: impl Fn(&DrawingArea<BitMapBackend, Shift>, bool) -> std::result::Result<(), String>) -> Result<bool> {
    let fail = |p: &Path, e: String| TrainError::Other(format!("{}: {e}", p.display()));
    let text = register_font();
    {
        let root = SVGBackend::new(svg, (900, 540)).into_drawing_area();
        draw_on(&root, text).map_err(|e| fail(svg, e))?;
    }
    let root = BitMapBackend::new(png, (900, 540)).into_drawing_area();
    draw_png(&root, text).map_err(|e| fail(png, e))?;
    Ok(text)
}

/// Writes `png` and `svg` with the training curve and held-out points. Returns whether the
/// charts have text (a font was found).
pub fn loss_curve(png: &Path, svg: &Path, train: &[(u64, f32)], heldout: &[(u64, f32)], title: &str) -> Result<bool> {
    render(png, svg, |root, text| draw(root, train, heldout, title, text), |root, text| draw(root, train, heldout, title, text))
}

/// One labelled curve of [`nll_curves`]: (training tokens, held-out NLL) points.
pub struct Series {
    pub label: String,
    pub points: Vec<(f64, f64)>,
}

const PALETTE: [RGBColor; 6] = [BLUE, RED, RGBColor(0, 140, 0), MAGENTA, RGBColor(230, 140, 0), CYAN];

fn draw_nll<DB: DrawingBackend>(root: &DrawingArea<DB, Shift>, series: &[Series], refs: &[(String, f64)], title: &str, text: bool) -> std::result::Result<(), String> {
    root.fill(&WHITE).map_err(|e| e.to_string())?;
    let xs = series.iter().flat_map(|s| s.points.iter().map(|p| p.0));
    let max_x = xs.fold(1.0f64, f64::max);
    let ys: Vec<f64> = series.iter().flat_map(|s| s.points.iter().map(|p| p.1)).chain(refs.iter().map(|r| r.1)).filter(|v| v.is_finite()).collect();
    let lo = ys.iter().copied().fold(f64::INFINITY, f64::min);
    let hi = ys.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    let (lo, hi) = if hi > lo { ((lo - 0.3).max(0.0), hi + 0.3) } else { (0.0, 12.0) };
    let mut builder = ChartBuilder::on(root);
    builder.margin(12).x_label_area_size(if text { 36 } else { 8 }).y_label_area_size(if text { 56 } else { 8 });
    if text {
        builder.caption(title, ("sans-serif", 20));
    }
    let mut chart = builder.build_cartesian_2d(0f64..max_x * 1.02, lo..hi).map_err(|e| e.to_string())?;
    let mut mesh = chart.configure_mesh();
    if text {
        mesh.x_desc("training tokens").y_desc("held-out NLL (nats/token)");
    } else {
        mesh.disable_x_axis().disable_y_axis();
    }
    mesh.draw().map_err(|e| e.to_string())?;
    for (i, s) in series.iter().enumerate() {
        let color = PALETTE[i % PALETTE.len()];
        let line = chart.draw_series(LineSeries::new(s.points.iter().copied(), color.stroke_width(2))).map_err(|e| e.to_string())?;
        if text {
            line.label(s.label.as_str()).legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 16, y)], color.stroke_width(2)));
        }
        chart.draw_series(s.points.iter().map(|&p| Circle::new(p, 3, color.filled()))).map_err(|e| e.to_string())?;
    }
    for (i, (label, v)) in refs.iter().enumerate() {
        let color = PALETTE[(series.len() + i) % PALETTE.len()].mix(0.7);
        let line = chart.draw_series(DashedLineSeries::new(vec![(0.0, *v), (max_x * 1.02, *v)], 6, 4, color.stroke_width(1))).map_err(|e| e.to_string())?;
        if text {
            line.label(label.as_str()).legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 16, y)], color));
        }
    }
    if text {
        chart.configure_series_labels().position(SeriesLabelPosition::UpperRight).background_style(WHITE.mix(0.8)).border_style(BLACK).draw().map_err(|e| e.to_string())?;
    }
    root.present().map_err(|e| e.to_string())
}

/// Writes `png` and `svg` with held-out NLL curves against training tokens and dashed
/// reference levels (the teacher, an undistilled conversion). Returns whether the charts
/// have text.
pub fn nll_curves(png: &Path, svg: &Path, series: &[Series], refs: &[(String, f64)], title: &str) -> Result<bool> {
    render(png, svg, |root, text| draw_nll(root, series, refs, title, text), |root, text| draw_nll(root, series, refs, title, text))
}

/// Axes of [`xy_curves`].
pub struct Axes<'a> {
    pub title: &'a str,
    pub x_desc: &'a str,
    pub y_desc: &'a str,
    /// A logarithmic x axis (context lengths from 1K to 32K).
    pub log_x: bool,
}

fn draw_xy<DB: DrawingBackend>(root: &DrawingArea<DB, Shift>, series: &[Series], axes: &Axes, text: bool) -> std::result::Result<(), String> {
    root.fill(&WHITE).map_err(|e| e.to_string())?;
    let pts = || series.iter().flat_map(|s| s.points.iter().copied()).filter(|p| p.0.is_finite() && p.1.is_finite());
    let (x0, x1) = pts().fold((f64::INFINITY, f64::NEG_INFINITY), |(l, h), p| (l.min(p.0), h.max(p.0)));
    let y1 = pts().fold(0.0f64, |h, p| h.max(p.1));
    let (x0, x1) = if x1 > x0 { (x0, x1) } else { (1.0, 2.0) };
    let y1 = if y1 > 0.0 { y1 * 1.1 } else { 1.0 };
    let mut builder = ChartBuilder::on(root);
    builder.margin(12).x_label_area_size(if text { 36 } else { 8 }).y_label_area_size(if text { 64 } else { 8 });
    if text {
        builder.caption(axes.title, ("sans-serif", 20));
    }
    macro_rules! finish {
        ($chart:expr) => {{
            let mut chart = $chart;
            let mut mesh = chart.configure_mesh();
            if text {
                mesh.x_desc(axes.x_desc).y_desc(axes.y_desc);
            } else {
                mesh.disable_x_axis().disable_y_axis();
            }
            mesh.draw().map_err(|e| e.to_string())?;
            for (i, s) in series.iter().enumerate() {
                let color = PALETTE[i % PALETTE.len()];
                let line = chart.draw_series(LineSeries::new(s.points.iter().copied(), color.stroke_width(2))).map_err(|e| e.to_string())?;
                if text {
                    line.label(s.label.as_str()).legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 16, y)], color.stroke_width(2)));
                }
                chart.draw_series(s.points.iter().map(|&p| Circle::new(p, 3, color.filled()))).map_err(|e| e.to_string())?;
            }
            if text {
                chart.configure_series_labels().position(SeriesLabelPosition::UpperRight).background_style(WHITE.mix(0.8)).border_style(BLACK).draw().map_err(|e| e.to_string())?;
            }
        }};
    }
    if axes.log_x && x0 > 0.0 {
        finish!(builder.build_cartesian_2d((x0 / 1.2..x1 * 1.2).log_scale(), 0f64..y1).map_err(|e| e.to_string())?);
    } else {
        let pad = (x1 - x0) * 0.02;
        finish!(builder.build_cartesian_2d(x0 - pad..x1 + pad, 0f64..y1).map_err(|e| e.to_string())?);
    }
    root.present().map_err(|e| e.to_string())
}

/// Writes `png` and `svg` with labelled curves of (x, y) points, y from zero (throughput
/// against context). Returns whether the charts have text.
pub fn xy_curves(png: &Path, svg: &Path, series: &[Series], axes: &Axes) -> Result<bool> {
    render(png, svg, |root, text| draw_xy(root, series, axes, text), |root, text| draw_xy(root, series, axes, text))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_png_and_svg() {
        let dir = std::env::temp_dir().join(format!("jetc-plot-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let train: Vec<(u64, f32)> = (1..=50).map(|s| (s, 1.0 / s as f32)).collect();
        let (png, svg) = (dir.join("loss.png"), dir.join("loss.svg"));
        loss_curve(&png, &svg, &train, &[(1, 1.0), (50, 0.1)], "test").unwrap();
        let bytes = std::fs::read(&png).unwrap();
        assert_eq!(&bytes[..8], b"\x89PNG\r\n\x1a\n");
        let s = std::fs::read_to_string(&svg).unwrap();
        assert!(s.contains("<svg") && s.contains("<polyline"), "svg content");
        if register_font() {
            assert!(s.contains("held-out"), "labels drawn when a font is found");
        }
        let series = [Series { label: "run A".into(), points: vec![(0.0, 5.0), (1e4, 4.5), (2e4, 4.2)] }];
        let (png, svg) = (dir.join("nll.png"), dir.join("nll.svg"));
        nll_curves(&png, &svg, &series, &[("teacher".into(), 3.2)], "nll").unwrap();
        assert_eq!(&std::fs::read(&png).unwrap()[..8], b"\x89PNG\r\n\x1a\n");
        let s = std::fs::read_to_string(&svg).unwrap();
        assert!(s.contains("<polyline"), "svg curve");
        if register_font() {
            assert!(s.contains("run A") && s.contains("teacher"), "legend");
        }
        let series = [Series { label: "original".into(), points: vec![(1024.0, 60.0), (32768.0, 8.0)] }];
        let (png, svg) = (dir.join("tput.png"), dir.join("tput.svg"));
        let axes = Axes { title: "decode", x_desc: "context (tokens)", y_desc: "tokens/s", log_x: true };
        xy_curves(&png, &svg, &series, &axes).unwrap();
        assert_eq!(&std::fs::read(&png).unwrap()[..8], b"\x89PNG\r\n\x1a\n");
        let s = std::fs::read_to_string(&svg).unwrap();
        assert!(s.contains("<polyline"), "svg curve");
        if register_font() {
            assert!(s.contains("original") && s.contains("context"), "legend and axis");
        }
        let _ = std::fs::remove_dir_all(&dir);
    }
}
