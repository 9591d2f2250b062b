//! Benchmark: local-distillation steps (teacher forward, student forward + backward, AdamW)
//! on a real model, printed as a table in tokens/s.
//!
//! ```text
//! cargo run --release -p jetc-train --example local_step -- MODEL.gguf [--layers all|L] [--seq 512] [--batch 8] [--steps 3]
//! ```
//! `--layers L` trains one JetBlock in place of layer L (every other layer stays attention;
//! the teacher runs only up to layer L); `all` trains every layer but 3, 12 and 20.
use std::time::Instant;

use jetc_models::convert::Layout;
use jetc_models::pipeline::load_raised;
use jetc_passes::linearize::{attention_layers, Block, MixerConfig};
use jetc_runtime::Session;
use jetc_train::feed::prefill_inputs;
use jetc_train::local::{build_local, initial_values, run_step};
use jetc_train::optim::{AdamW, AdamWConfig};

fn arg(args: &[String], name: &str, default: &str) -> String {
    args.iter().position(|a| a == name).and_then(|i| args.get(i + 1)).cloned().unwrap_or_else(|| default.to_string())
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    let model = args.get(1).ok_or("usage: local_step MODEL [--layers all|L] [--seq N] [--batch N] [--steps N]")?;
    let seq: usize = arg(&args, "--seq", "512").parse()?;
    let batch: usize = arg(&args, "--batch", "8").parse()?;
    let steps: usize = arg(&args, "--steps", "3").parse()?;
    let which = arg(&args, "--layers", "1");
    let teacher = load_raised(std::path::Path::new(model))?;
    let n = attention_layers(&teacher)?.len();
    let full_attn: Vec<usize> = match which.as_str() {
        "all" => vec![3, 12, 20].into_iter().filter(|&l| l < n).collect(),
        l => {
            let l: usize = l.parse()?;
            (0..n).filter(|&i| i != l).collect()
        }
    };
    let layout = Layout { full_attn, swa: vec![], window: None, block: Block::JetBlock, blocks: vec![], config: MixerConfig::default() };
    let t0 = Instant::now();
    let lg = build_local(&teacher, &layout, 0)?;
    let build_s = t0.elapsed().as_secs_f64();
    let session = Session::new(&lg.graph)?;
    let mut opt = AdamW::new(AdamWConfig::default(), initial_values(&lg)?);
    let ids: Vec<i64> = (0..batch * seq).map(|i| ((i * 7919) % 40000) as i64 + 100).collect();
    let mut times = Vec::new();
    for _ in 0..steps {
        let feed = prefill_inputs(&lg.graph, &ids, batch, seq)?;
        let w: Vec<_> = opt.slots.iter().map(|s| s.value.clone()).collect();
        let t = Instant::now();
        let out = run_step(&lg, &session, feed, &w)?;
        let t_fb = t.elapsed().as_secs_f64();
        opt.step(&out.grads, 1e-3)?;
        times.push((t_fb, t.elapsed().as_secs_f64(), out.loss, session.last_peak_bytes()));
    }
    let threads = rayon::current_num_threads();
    println!("| layers trained | seq x batch | threads | graph build s | step s (fwd+bwd) | step s (+AdamW) | tokens/s | activations at peak | loss |");
    println!("|---|---|---|---|---|---|---|---|---|");
    for (fb, all, loss, peak) in &times {
        println!(
            "| {} | {seq} x {batch} | {threads} | {build_s:.2} | {fb:.2} | {all:.2} | {:.0} | {:.0} MB | {loss:.4} |",
            lg.layers.len(),
            (seq * batch) as f64 / all,
            *peak as f64 / 1e6
        );
    }
    Ok(())
}
