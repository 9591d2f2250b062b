//! `jetc`: import a decoder, inspect it, run it on the CPU, and (in later stages) convert it
//! to a hybrid linear-attention model and compile it.
mod commands;
mod error;
mod load;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "jetc", version, about = "Turn a pretrained Transformer into a fast hybrid model")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Architecture summary: layers, mixers, heads, parameters, cache size.
    Inspect {
        model: PathBuf,
        /// Machine-readable output.
        #[arg(long)]
        json: bool,
        /// Count KV and conv caches at this dtype (f32, f16, bf16) instead of the model's.
        #[arg(long)]
        cache_dtype: Option<String>,
    },
    /// Print the IR after import (and after the named passes).
    Dump {
        model: PathBuf,
        /// Comma-separated passes to run after import, e.g. `raise`.
        #[arg(long, value_delimiter = ',')]
        passes: Vec<String>,
        /// Print the graph exactly as imported, before canonicalization.
        #[arg(long)]
        raw: bool,
    },
    /// Evaluate the model on the CPU executor.
    Run {
        model: PathBuf,
        /// Inputs as an .npz, matched to graph inputs by name.
        #[arg(long)]
        inputs: PathBuf,
        /// Where to write the outputs (.npz, under the graph's output names).
        #[arg(long)]
        out: PathBuf,
        /// Run the imported graph as-is, without raising it to decoder ops.
        #[arg(long)]
        no_raise: bool,
    },
    /// Write the model back to ONNX (after import and the standard passes).
    Export {
        model: PathBuf,
        #[arg(short, long)]
        output: PathBuf,
        /// Store weights in `<output>.data`.
        #[arg(long)]
        external_data: bool,
    },
    /// Convert a decoder into a hybrid model (full attention / SWA / linear mixer per layer).
    Convert {
        model: PathBuf,
        /// Output: a directory for jet-hf and both, a .onnx file for onnx.
        #[arg(short, long)]
        output: PathBuf,
        /// Layers (0-indexed) that keep full attention, e.g. 14,19.
        #[arg(long, value_delimiter = ',')]
        full_attn: Vec<usize>,
        /// Layers that become sliding-window attention.
        #[arg(long, value_delimiter = ',')]
        swa: Vec<usize>,
        /// SWA window in tokens (each query sees itself and the previous window-1 keys).
        #[arg(long)]
        window: Option<usize>,
        /// Linear mixer for the remaining layers: jetblock, gated-deltanet, deltanet or retnet.
        #[arg(long, default_value = "jetblock")]
        block: String,
        /// Mixer heads (default: the base model's).
        #[arg(long)]
        heads: Option<usize>,
        /// Mixer key head size (default: 3/4 of the base head size).
        #[arg(long)]
        dk: Option<usize>,
        /// Mixer value head size (default: twice the base head size).
        #[arg(long)]
        dv: Option<usize>,
        /// Output format: onnx (opset 27, LinearAttention), jet-hf (config.json +
        /// model.safetensors in the reference's names) or both.
        #[arg(long, default_value = "both")]
        format: String,
        /// A JSON layout file instead of the flags above.
        #[arg(long)]
        layout: Option<PathBuf>,
        /// Seed of the new mixer weights.
        #[arg(long, default_value_t = 0)]
        seed: u64,
        /// Print the converted model's summary as JSON.
        #[arg(long)]
        json: bool,
        /// Count KV and conv caches at this dtype in the summary (f32, f16, bf16).
        #[arg(long)]
        cache_dtype: Option<String>,
    },
    /// Write a decoder with random weights at real shapes.
    Synth {
        /// Architecture: qwen2.5-0.5b, qwen2.5-1.5b, qwen2.5-3b, llama-tiny.
        #[arg(long)]
        arch: String,
        #[arg(short, long)]
        output: PathBuf,
        #[arg(long, default_value_t = 0)]
        seed: u64,
        /// Storage type of the weights: f32, f16 or bf16 (computation is f32 either way).
        #[arg(long, default_value = "f32")]
        dtype: String,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Inspect { model, json, cache_dtype } => commands::inspect::run(&model, json, cache_dtype.as_deref()),
        Command::Dump { model, passes, raw } => commands::dump::run(&model, &passes, raw),
        Command::Run { model, inputs, out, no_raise } => commands::run::run(&model, &inputs, &out, !no_raise),
        Command::Export { model, output, external_data } => commands::export::run(&model, &output, external_data),
        Command::Convert { model, output, full_attn, swa, window, block, heads, dk, dv, format, layout, seed, json, cache_dtype } => {
            commands::convert::run(&commands::convert::ConvertArgs {
                model, output, full_attn, swa, window, block, heads, dk, dv, format, layout, seed, json, cache_dtype,
            })
        }
        Command::Synth { arch, output, seed, dtype } => commands::synth::run(&arch, &output, seed, &dtype),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}
