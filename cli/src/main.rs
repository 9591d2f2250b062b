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
        Command::Inspect { model, json } => commands::inspect::run(&model, json),
        Command::Dump { model, passes, raw } => commands::dump::run(&model, &passes, raw),
        Command::Run { model, inputs, out, no_raise } => commands::run::run(&model, &inputs, &out, !no_raise),
        Command::Export { model, output, external_data } => commands::export::run(&model, &output, external_data),
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
