//! `jetc`: import a decoder, inspect it, run it on the CPU, and (in later stages) convert it
//! to a hybrid linear-attention model and compile it.
mod commands;
mod error;
mod load;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "jetc",
    version,
    about = "Turn a pretrained Transformer into a fast hybrid model"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

/// The flags of every `jetc search` subcommand.
#[derive(clap::Args)]
struct SearchFlags {
    /// The `jetc distill --supernet` run (its newest checkpoint).
    supernet: PathBuf,
    /// The base model (default: the one the run's distill.json names).
    #[arg(long)]
    model: Option<PathBuf>,
    /// Output directory (new or empty; with --resume, the stopped search's).
    #[arg(short, long)]
    output: PathBuf,
    #[command(flatten)]
    tasks: commands::eval::TaskFlags,
    /// Tokenizer (a .gguf or tokenizer.json) when the model does not carry one.
    #[arg(long)]
    tokenizer: Option<PathBuf>,
    /// Linear block of the non-attention layers (default: the run's block).
    #[arg(long)]
    block: Option<String>,
    /// Continue a stopped search in DIR (same flags): what was scored is kept.
    #[arg(long)]
    resume: bool,
    /// Memory for the hidden states cached at layer boundaries (subnets sharing their first
    /// layers skip them), in MiB; 0 turns the cache off.
    #[arg(long, default_value_t = 2048)]
    hidden_cache_mb: usize,
    /// Print the result as JSON.
    #[arg(long)]
    json: bool,
}

impl SearchFlags {
    fn into_common(self) -> Result<commands::search::SearchCommon, error::CliError> {
        Ok(commands::search::SearchCommon {
            suite: self.tasks.options()?,
            supernet: self.supernet,
            model: self.model,
            output: self.output,
            tokenizer: self.tokenizer,
            block: self.block,
            resume: self.resume,
            hidden_cache_mb: self.hidden_cache_mb,
            json: self.json,
            quiet: false,
        })
    }
}

/// `jetc search` subcommands.
#[derive(Subcommand)]
enum SearchCommand {
    /// Heat map: each layer alone on full attention (the others the supernet's linear block)
    /// scored on the tasks, beside the all-linear subnet; writes DIR/heatmap.json (rows,
    /// which layers carry each task, overlaps), heatmap.png, heatmap.svg and cells.jsonl.
    Heatmap {
        #[command(flatten)]
        common: SearchFlags,
        /// Layers to map, e.g. 0,5,10 (default: every layer).
        #[arg(long, value_delimiter = ',')]
        layers: Vec<usize>,
    },
    /// Block selection: at one placement (the layout flags), each --candidates block
    /// distilled with the same recipe and tokens (under DIR/<block>, skipped when done),
    /// then scored on the tasks; writes DIR/block.json, block.png and block.svg.
    Block {
        /// The base model.
        model: PathBuf,
        /// Output directory (new, or a stopped selection with the same settings).
        #[arg(short, long)]
        output: PathBuf,
        #[command(flatten)]
        layout: commands::convert::LayoutFlags,
        /// The linear blocks compared, e.g. jetblock,gated-deltanet,deltanet,gla,retnet,mamba2.
        #[arg(long, value_delimiter = ',', required = true)]
        candidates: Vec<String>,
        #[command(flatten)]
        tasks: commands::eval::TaskFlags,
        /// Tokenizer (a .gguf or tokenizer.json) when the model does not carry one.
        #[arg(long)]
        tokenizer: Option<PathBuf>,
        #[command(flatten)]
        recipe: commands::search::RecipeFlags,
        /// Print the result as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Hardware-aware search: at the layout (flags), the (heads, d_k, d_v) that keep its
    /// recurrent state, each distilled with the same recipe and tokens, with parameters,
    /// cache bytes, decode throughput on the CPU executor and the objective; writes
    /// DIR/hw.json (Pareto front, pick), hw.png, hw.svg and layout.json of the pick.
    Hw {
        /// The base model.
        model: PathBuf,
        /// Output directory (new, or a stopped search with the same settings).
        #[arg(short, long)]
        output: PathBuf,
        #[command(flatten)]
        layout: commands::convert::LayoutFlags,
        /// Points `H:dk:dv,...` (default: a grid of head counts at the layout's state).
        #[arg(long, value_delimiter = ',')]
        points: Vec<String>,
        /// Points of the default grid.
        #[arg(long, default_value_t = 6)]
        max_points: usize,
        #[command(flatten)]
        tasks: commands::eval::TaskFlags,
        /// Tokenizer (a .gguf or tokenizer.json) when the model does not carry one.
        #[arg(long)]
        tokenizer: Option<PathBuf>,
        #[command(flatten)]
        recipe: commands::search::RecipeFlags,
        /// `task[:metric][=weight],...` (default: each task's own metric).
        #[arg(long)]
        objective: Option<String>,
        /// Decode throughput: tokens of context before the timed steps.
        #[arg(long, default_value_t = 512)]
        decode_context: usize,
        /// Decode throughput: timed single-token steps (batch 1).
        #[arg(long, default_value_t = 32)]
        decode_tokens: usize,
        /// Print the result as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Placement: which --budget layers keep full attention, by beam search (exhaustive
    /// where that costs no more subnets) under an objective, beside uniform placement;
    /// writes DIR/placement.json (top placements, uniform, gap), layout.json (for `jetc
    /// convert --supernet RUN --layout` and `jetc distill --layout`) and placements.jsonl.
    Placement {
        #[command(flatten)]
        common: SearchFlags,
        /// Layers on full attention.
        #[arg(long)]
        budget: usize,
        /// Beam width.
        #[arg(long, default_value_t = 12)]
        beam: usize,
        /// `task[:metric][=weight],...` (or a file holding it), higher-is-better metrics
        /// added, lower-is-better subtracted; default: each task's own (the correct answer's
        /// loss for multiple choice, accuracy for passkey, NLL for lm).
        #[arg(long)]
        objective: Option<String>,
        /// Layers the search may pick (default: all).
        #[arg(long, value_delimiter = ',')]
        candidates: Vec<usize>,
        /// A `jetc search heatmap` directory of the same supernet and tasks: its cells are
        /// the one-layer subnets' scores, not scored again.
        #[arg(long)]
        heatmap: Option<PathBuf>,
        /// Then place this many sliding-window attention layers among the layers left, the
        /// full-attention ones fixed (the supernet needs an swa path: `--supernet attn,swa,...`).
        #[arg(long, default_value_t = 0)]
        swa: usize,
        /// The SWA window in tokens (default: the supernet's).
        #[arg(long, requires = "swa")]
        window: Option<usize>,
    },
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
        /// Output directory: model.onnx (and for jet-hf / both config.json and
        /// model.safetensors) and the tokenizer go inside it. With --format onnx, a path
        /// ending in .onnx names the model file itself (the tokenizer beside it).
        #[arg(short, long)]
        output: PathBuf,
        #[command(flatten)]
        layout: commands::convert::LayoutFlags,
        /// Output format: onnx (opset 27, LinearAttention), jet-hf (config.json +
        /// model.safetensors in the reference's names), both, or auto (the default: both when
        /// the hybrid fits the Jet-Nemotron layout, else ONNX only, with a note saying why).
        #[arg(long, default_value = "auto")]
        format: String,
        /// Seed of the new mixer weights.
        #[arg(long, default_value_t = 0)]
        seed: u64,
        /// Print the converted model's summary as JSON.
        #[arg(long)]
        json: bool,
        /// Count KV and conv caches at this dtype in the summary (f32, f16, bf16).
        #[arg(long)]
        cache_dtype: Option<String>,
        /// A `jetc distill` run (DIR): the layout's linear blocks take the weights of its
        /// newest checkpoint (a sampled path-phase run holds every layer's block: any layout).
        #[arg(long)]
        supernet: Option<PathBuf>,
    },
    /// Distill the linear mixers of a layout from the model's own attention (`--phase local`,
    /// teacher-forced: each block matches its layer's attention output from the teacher's
    /// layer input; `--phase path`: the hybrid end to end against the teacher's hidden
    /// states), then write the distilled hybrid as `convert` does, under DIR/model.
    Distill {
        model: PathBuf,
        /// Output directory (new or empty): metrics.jsonl, distill.json, model/.
        #[arg(short, long)]
        output: PathBuf,
        /// Training text: files or directories of .txt/.md/.rst, JSONL with a text field, or
        /// Parquet with a text column (Hugging Face datasets' shards).
        #[arg(long, value_delimiter = ',', required = true)]
        data: Vec<PathBuf>,
        /// The JSONL field or Parquet column holding the text.
        #[arg(long, default_value = "text")]
        text_field: String,
        #[command(flatten)]
        layout: commands::convert::LayoutFlags,
        /// Tokenizer (a .gguf or tokenizer.json) when the model does not carry one.
        #[arg(long)]
        tokenizer: Option<PathBuf>,
        /// Optimizer steps (default: one pass over the training windows).
        #[arg(long)]
        steps: Option<u64>,
        /// Train on this many tokens instead of --steps.
        #[arg(long)]
        tokens: Option<u64>,
        #[arg(long, default_value_t = 512)]
        seq_len: usize,
        #[arg(long, default_value_t = 8)]
        batch: usize,
        /// Peak learning rate (linear warmup, then cosine decay to 10%).
        #[arg(long, default_value_t = 1e-3)]
        lr: f32,
        /// Warmup steps (default: 10% of the steps, at most 100).
        #[arg(long)]
        warmup: Option<u64>,
        #[arg(long, default_value_t = 0.01)]
        weight_decay: f32,
        /// Clip the global gradient norm (0: no clipping).
        #[arg(long, default_value_t = 1.0)]
        clip: f32,
        /// Seed of the initial mixer weights and of the data order.
        #[arg(long, default_value_t = 0)]
        seed: u64,
        /// Worker threads (default: all cores).
        #[arg(long)]
        threads: Option<usize>,
        /// Format of the distilled model (as `convert --format`).
        #[arg(long, default_value = "auto")]
        format: String,
        /// Print the run's summary as JSON.
        #[arg(long)]
        json: bool,
        /// Write a checkpoint every N steps (and always at the end and on Ctrl-C; 0: only then).
        #[arg(long, default_value_t = 100)]
        checkpoint_every: u64,
        /// Continue the run in the output directory from its newest valid checkpoint (same flags).
        #[arg(long)]
        resume: bool,
        /// Where tokenized corpora are cached (`none`: no cache). Default ~/.cache/jetc/tokens.
        #[arg(long)]
        token_cache: Option<PathBuf>,
        /// `local`: each block matches its attention from the teacher's layer input. `path`:
        /// the student runs the layout end to end, every layer's hidden state matched to the
        /// teacher's. `kd`: end to end on the teacher's logits alone (KL, weight --kl or 1).
        #[arg(long, default_value = "local")]
        phase: String,
        /// Path phase: `fixed` (the layout given), `uniform` (each layer any candidate with
        /// equal odds), `budget:K` (K attention layers drawn per step, the others any other
        /// candidate) or `layouts` (stars and bars: the count of each candidate drawn
        /// uniformly, then the positions shuffled).
        #[arg(long, default_value = "fixed")]
        sample: String,
        /// Train a supernet: the candidates of every layer, e.g. attn,swa,jetblock,gated-deltanet
        /// (`swa` needs --window). The local phase trains every linear candidate of every layer
        /// at once; the path phase samples a candidate per layer per step (--sample). Without it
        /// the candidates are attn and --block.
        #[arg(long)]
        supernet: Option<String>,
        /// Path and kd phases: the attention and SWA layers' projections train too.
        #[arg(long)]
        train_attn: bool,
        /// Path and kd phases: weight of the cross-entropy on the data's own next tokens (0: none).
        #[arg(long, default_value_t = 0.0)]
        ce: f32,
        /// Path phase: weight of the cross-entropy against the teacher's logits (0: none).
        #[arg(long, default_value_t = 0.0)]
        kl: f32,
        /// Start from the weights of an earlier distill run's newest checkpoint (DIR).
        #[arg(long)]
        init_from: Option<PathBuf>,
        /// Measure the layout's held-out NLL every N steps (in metrics.jsonl; 0: only before
        /// and after).
        #[arg(long, default_value_t = 0)]
        eval_every: u64,
        /// Path and kd phases: the MLPs (SwiGLU weights) train too, not only the linear blocks.
        #[arg(long)]
        train_mlp: bool,
        /// How the blocks start: `attention` (weights mapped from the attention they replace)
        /// or `calibrated` (the same, then each block's output projection fitted by least
        /// squares to its attention's output on --calib-tokens training tokens).
        #[arg(long, default_value = "attention")]
        init: String,
        /// Tokens the calibrated init fits on (whole batches of --batch x --seq-len). On
        /// SmolLM2, 16K generalizes better than 4K (held-out NLL 5.06 vs 5.29).
        #[arg(long, default_value_t = 16384)]
        calib_tokens: usize,
        /// Measure the held-out NLL on these files (text the training data does not contain,
        /// same formats as --data) instead of on every 20th window of the training data.
        #[arg(long, value_delimiter = ',')]
        eval_data: Vec<PathBuf>,
        /// How many held-out windows of --seq-len tokens the NLL is measured on.
        #[arg(long, default_value_t = commands::distill::DEFAULT_EVAL_WINDOWS)]
        eval_windows: usize,
    },
    /// Score a model on offline tasks: `lm` (NLL, perplexity, bits per byte on --data),
    /// `passkey` (a 5-digit key hidden in filler, teacher-forced exact match), `niah`
    /// (RULER-style needles), `kv-recall` (a phonebook) and the
    /// multiple-choice tasks arc-e, arc-c, hellaswag, piqa, winogrande, mmlu, mmlu-dev
    /// (group: commonsense; acc, acc_norm, answer loss). MODEL is a .gguf, or an .onnx with
    /// tokenizer.json beside it.
    Eval {
        model: PathBuf,
        #[command(flatten)]
        tasks: commands::eval::TaskFlags,
        /// Tokenizer (a .gguf or tokenizer.json) when the model does not carry one.
        #[arg(long)]
        tokenizer: Option<PathBuf>,
        /// Print one JSON object instead of a table.
        #[arg(long)]
        json: bool,
        /// With layout flags, MODEL is the base model and the layout's hybrid is scored.
        #[command(flatten)]
        layout: commands::convert::LayoutFlags,
        /// Score the layout's subnet of this `jetc distill` run (its newest checkpoint's weights).
        #[arg(long)]
        supernet: Option<PathBuf>,
    },
    /// The whole PostNAS pipeline: supernet distillation, heat map, placement, block
    /// selection, hardware-aware search, final distillation (local + KD) of the chosen
    /// design, export (ONNX + jet-hf + tokenizer + CUDA kernels); each stage under DIR,
    /// skipped when done and continued when stopped; ends with DIR/report.md.
    Postnas {
        model: PathBuf,
        #[arg(short, long)]
        output: PathBuf,
        /// Layers that keep full attention.
        #[arg(long)]
        budget: usize,
        /// The supernet's linear block.
        #[arg(long, default_value = "jetblock")]
        block: String,
        /// Block-selection candidates (the supernet's block is always among them).
        #[arg(long, value_delimiter = ',', default_value = "jetblock,gated-deltanet")]
        candidates: Vec<String>,
        #[command(flatten)]
        tasks: commands::eval::TaskFlags,
        /// Tokenizer (a .gguf or tokenizer.json) when the model does not carry one.
        #[arg(long)]
        tokenizer: Option<PathBuf>,
        /// The recipe of the path phases, block selection and the hardware-aware search.
        #[command(flatten)]
        recipe: commands::search::RecipeFlags,
        /// Learning rate of the local phases.
        #[arg(long, default_value_t = 1e-4)]
        local_lr: f32,
        /// Supernet: local-phase steps (0: none), then path-phase steps.
        #[arg(long, default_value_t = 32)]
        supernet_local_steps: u64,
        #[arg(long, default_value_t = 160)]
        supernet_steps: u64,
        /// Final design: local-phase steps (0: none), then KD steps.
        #[arg(long, default_value_t = 32)]
        final_local_steps: u64,
        #[arg(long, default_value_t = 100)]
        final_kd_steps: u64,
        /// Placement beam width.
        #[arg(long, default_value_t = 12)]
        beam: usize,
        /// Placement searches among the heat map's best N layers under the objective (0: every
        /// layer; 30 layers at budget 2 is 435 subnets).
        #[arg(long, default_value_t = 8)]
        placement_layers: usize,
        /// `task[:metric][=weight],...` (default: each task's own metric).
        #[arg(long)]
        objective: Option<String>,
        /// Points of the hardware-aware grid.
        #[arg(long, default_value_t = 6)]
        max_points: usize,
        /// Print the run's summary as JSON.
        #[arg(long)]
        json: bool,
    },
    /// The PostNAS search over a trained supernet (a `jetc distill --supernet` run).
    Search {
        #[command(subcommand)]
        what: SearchCommand,
    },
    /// Generate text: prefill the prompt, then decode token by token (greedy by default).
    /// MODEL is a .gguf, or an .onnx with tokenizer.json (and tokenizer_config.json) beside it.
    Generate {
        model: PathBuf,
        /// Raw prompt text (the tokenizer adds BOS if the model wants it).
        #[arg(long, conflicts_with = "chat")]
        prompt: Option<String>,
        /// A user message, rendered with the model's chat template.
        #[arg(long)]
        chat: Option<String>,
        /// A system message before the --chat message.
        #[arg(long, requires = "chat")]
        system: Option<String>,
        /// At most this many new tokens.
        #[arg(long, default_value_t = 128)]
        max_tokens: usize,
        /// Sample at this temperature instead of greedy decoding (0 is greedy).
        #[arg(long)]
        temperature: Option<f32>,
        /// Nucleus sampling: keep the most likely tokens up to this probability mass.
        #[arg(long, requires = "temperature")]
        top_p: Option<f32>,
        /// Seed of the sampling RNG.
        #[arg(long, default_value_t = 0)]
        seed: u64,
        /// Print one JSON object (ids, text, timings) instead of streaming text.
        #[arg(long)]
        json: bool,
        /// Take the tokenizer and chat template from this file instead of the model's: a .gguf,
        /// a tokenizer.json, or a directory holding one.
        #[arg(long)]
        tokenizer: Option<PathBuf>,
        /// Quantize activations to 8 bits per block of 32 and dot them in integers with Q4_0,
        /// Q4_1 and Q8_0 weights on the decode path, as llama.cpp does: faster, but not the
        /// f32 result (logits move by the rounding of the activations).
        #[arg(long)]
        int8_dot: bool,
        /// How a GGUF model's weights are held: `stored` keeps the file's format (f16, bf16,
        /// Q4_0, Q8_0, K-quants, ...) and de-quantizes inside the matmuls; `f32` de-quantizes
        /// every weight at load (5-8x the memory; the reference for the stored kernels).
        #[arg(long, default_value = "stored", value_parser = ["stored", "f32"])]
        weights: String,
    },
    /// Prefill and decode throughput on the CPU executor at several context lengths and a
    /// batch size: tokens/s, the bytes a step must move and the GB/s that implies, peak
    /// memory; with --compare, a second model (its hybrid: a file or a `jetc convert`
    /// directory) and the measured speedup beside the one its bytes per step predict. The
    /// caches are filled with random entries at each context (the cost of a step depends on
    /// their size, not their values), so no long prefill is needed.
    Bench {
        model: PathBuf,
        /// A second model to measure the same way and compare with the first.
        #[arg(long)]
        compare: Option<PathBuf>,
        /// Compare with MODEL converted in memory to this layout (a JSON layout file as
        /// `convert --layout` reads; untrained mixers run at the trained ones' speed), its
        /// other weights held as MODEL's.
        #[arg(long, conflicts_with = "compare")]
        compare_layout: Option<PathBuf>,
        /// Context lengths (cached tokens before the timed steps), e.g. 1k,4k,16k,32k.
        #[arg(long, value_delimiter = ',', default_value = "1k,4k", value_parser = commands::bench::parse_context)]
        context: Vec<usize>,
        /// Sequences decoded at once (each its own caches).
        #[arg(long, default_value_t = 1)]
        batch: usize,
        /// Timed decode steps per context.
        #[arg(long, default_value_t = 64)]
        new_tokens: usize,
        /// Prompt tokens per sequence of the prefill measurement (0: none).
        #[arg(long, default_value_t = 512)]
        prefill_tokens: usize,
        /// Quantize activations to 8 bits per block of 32 and dot them in integers with Q4_0,
        /// Q4_1 and Q8_0 weights on the decode path, as llama.cpp does: faster, but not the
        /// f32 result (logits move by the rounding of the activations).
        #[arg(long)]
        int8_dot: bool,
        /// How a GGUF model's weights are held (as `generate --weights`).
        #[arg(long, default_value = "stored", value_parser = ["stored", "f32"])]
        weights: String,
        /// Write a PNG (and an SVG beside it) of decode throughput against context.
        #[arg(long)]
        plot: Option<PathBuf>,
        /// Worker threads (default: all cores).
        #[arg(long)]
        threads: Option<usize>,
        /// Seed of the random ids and cache contents.
        #[arg(long, default_value_t = 0)]
        seed: u64,
        /// Machine-readable output.
        #[arg(long)]
        json: bool,
    },
    /// Render and compile (NVRTC, no GPU needed) every CUDA kernel a converted model needs:
    /// .cu, .ptx, .cubin and manifest.json. MODEL: a converted .onnx or a preset
    /// (jet-nemotron-2b, jet-nemotron-4b).
    Codegen {
        model: String,
        /// Target GPU architecture.
        #[arg(long, default_value = "sm_90")]
        arch: String,
        #[arg(short, long)]
        output: PathBuf,
        /// Activation dtype: bf16, f16 or f32 (the recurrent state is always f32).
        #[arg(long, default_value = "bf16")]
        dtype: String,
        /// Write the CUDA sources only (no NVRTC needed).
        #[arg(long)]
        render_only: bool,
        /// Cross-check every instance with the external ptxas (-v).
        #[arg(long)]
        ptxas: bool,
        /// Do not fail when a kernel spills registers.
        #[arg(long)]
        allow_spills: bool,
    },
    /// Autotune the kernels of MODEL (or one --kernel at --shape) on the local GPU into the
    /// tuning database; a second run is served from it. Needs a GPU.
    Tune {
        model: Option<String>,
        /// One kernel family instead of a model: jet_decode, gdn_chunk_prep, gdn_chunk_state, ...
        #[arg(long)]
        kernel: Option<String>,
        /// Sizes of --kernel, e.g. heads=12,dk=96,dv=256,width=4.
        #[arg(long, value_delimiter = ';')]
        shape: Vec<String>,
        #[arg(long, default_value = "bf16")]
        dtype: String,
        /// Batch sizes to tune for (default: 1,8,64,256 for decode, 1,8 for prefill).
        #[arg(long, value_delimiter = ',')]
        batch: Vec<usize>,
        /// Prompt lengths for prefill kernels (default 4096).
        #[arg(long, value_delimiter = ',')]
        seq: Vec<usize>,
        /// Tuning database (default: JETC_TUNING_DB or ~/.cache/jetc/tuning.json).
        #[arg(long)]
        db: Option<PathBuf>,
    },
    /// Run every kernel of MODEL on the GPU against the CPU reference and time it.
    GpuBench {
        model: String,
        #[arg(long, default_value = "bf16")]
        dtype: String,
        /// Decode batch sizes (default 1,8,64,256).
        #[arg(long, value_delimiter = ',')]
        batch: Vec<usize>,
        /// Prefill batch sizes (default 1,8).
        #[arg(long, value_delimiter = ',')]
        prefill_batch: Vec<usize>,
        /// Prefill lengths (default 4096).
        #[arg(long, value_delimiter = ',')]
        seq: Vec<usize>,
        /// Also write the results as JSON here.
        #[arg(long)]
        json: Option<PathBuf>,
    },
    /// Write a decoder with random weights at real shapes.
    Synth {
        /// Architecture: qwen2.5-0.5b, qwen2.5-1.5b, qwen2.5-3b, qwen3-0.6b, llama-tiny.
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
    // Freed buffers stay in the heap for the next op instead of being page-faulted in again.
    jetc_runtime::alloc_policy::keep_freed_memory();
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Inspect {
            model,
            json,
            cache_dtype,
        } => commands::inspect::run(&model, json, cache_dtype.as_deref()),
        Command::Dump { model, passes, raw } => commands::dump::run(&model, &passes, raw),
        Command::Run {
            model,
            inputs,
            out,
            no_raise,
        } => commands::run::run(&model, &inputs, &out, !no_raise),
        Command::Export {
            model,
            output,
            external_data,
        } => commands::export::run(&model, &output, external_data),
        Command::Convert {
            model,
            output,
            layout,
            format,
            seed,
            json,
            cache_dtype,
            supernet,
        } => commands::convert::run(&commands::convert::ConvertArgs {
            model,
            output,
            layout,
            format,
            seed,
            json,
            cache_dtype,
            supernet,
        }),
        Command::Distill {
            model,
            output,
            data,
            text_field,
            layout,
            tokenizer,
            steps,
            tokens,
            seq_len,
            batch,
            lr,
            warmup,
            weight_decay,
            clip,
            seed,
            threads,
            format,
            json,
            checkpoint_every,
            resume,
            token_cache,
            phase,
            sample,
            kl,
            init_from,
            eval_every,
            train_mlp,
            init,
            calib_tokens,
            supernet,
            train_attn,
            ce,
            eval_data,
            eval_windows,
        } => {
            if let Some(n) = threads {
                if let Err(e) = rayon::ThreadPoolBuilder::new()
                    .num_threads(n.max(1))
                    .build_global()
                {
                    eprintln!("note: --threads {n} not applied: {e}");
                }
            }
            commands::distill::run(&commands::distill::DistillArgs {
                model,
                output,
                layout,
                data,
                text_field,
                tokenizer,
                steps,
                tokens,
                seq_len,
                batch,
                lr,
                warmup,
                weight_decay,
                clip,
                seed,
                format,
                json,
                checkpoint_every,
                resume,
                token_cache,
                phase,
                sample,
                kl,
                init_from,
                eval_every,
                train_mlp,
                init,
                calib_tokens,
                supernet,
                train_attn,
                ce,
                eval_data,
                eval_windows,
            })
        }
        Command::Eval {
            model,
            tasks,
            tokenizer,
            json,
            layout,
            supernet,
        } => tasks.options().and_then(|suite| {
            commands::eval::run(&commands::eval::EvalArgs {
                model,
                suite,
                tokenizer,
                json,
                layout,
                supernet,
            })
        }),
        Command::Search {
            what: SearchCommand::Heatmap { common, layers },
        } => common.into_common().and_then(|common| {
            commands::search::heatmap(&commands::search::HeatmapArgs { common, layers })
        }),
        Command::Search {
            what:
                SearchCommand::Block { model, output, layout, candidates, tasks, tokenizer, recipe, json },
        } => tasks.options().and_then(|suite| {
            commands::search::block(&commands::search::BlockArgs { model, output, layout, candidates, suite, tokenizer, recipe, json, quiet: false })
        }),
        Command::Postnas {
            model, output, budget, block, candidates, tasks, tokenizer, recipe, local_lr, supernet_local_steps, supernet_steps, final_local_steps, final_kd_steps, beam, placement_layers, objective, max_points, json,
        } => tasks.options().and_then(|suite| {
            commands::postnas::run(&commands::postnas::PostnasArgs {
                model, output, budget, block, candidates, suite, tokenizer, recipe, local_lr, supernet_local_steps, supernet_steps, final_local_steps, final_kd_steps, beam,
                placement_layers, objective, max_points, json,
            })
        }),
        Command::Search {
            what: SearchCommand::Hw { model, output, layout, points, max_points, tasks, tokenizer, recipe, objective, decode_context, decode_tokens, json },
        } => tasks.options().and_then(|suite| {
            commands::search::hw(&commands::search::HwArgs {
                model, output, layout, points, max_points, suite, tokenizer, recipe, objective, decode_context, decode_tokens, json, quiet: false,
            })
        }),
        Command::Search {
            what:
                SearchCommand::Placement {
                    common,
                    budget,
                    beam,
                    objective,
                    candidates,
                    heatmap,
                    swa,
                    window,
                },
        } => common.into_common().and_then(|common| {
            commands::search::placement(&commands::search::PlacementArgs {
                common,
                budget,
                beam,
                objective,
                candidates,
                heatmap,
                swa,
                window,
            })
        }),
        Command::Bench { model, compare, compare_layout, context, batch, new_tokens, prefill_tokens, int8_dot, weights, plot, threads, seed, json } => {
            jetc_runtime::quant::q8::set_int8_dot(int8_dot);
            if let Some(n) = threads {
                if let Err(e) = rayon::ThreadPoolBuilder::new().num_threads(n.max(1)).build_global() {
                    eprintln!("note: --threads {n} not applied: {e}");
                }
            }
            commands::bench::run(&commands::bench::BenchArgs {
                model,
                compare,
                compare_layout,
                contexts: context,
                batch,
                new_tokens,
                prefill_tokens,
                stored_weights: weights == "stored",
                plot,
                json,
                seed,
            })
        }
        Command::Generate {
            model,
            prompt,
            chat,
            system,
            max_tokens,
            temperature,
            top_p,
            seed,
            json,
            tokenizer,
            int8_dot,
            weights,
        } => commands::generate::run(&commands::generate::GenerateArgs {
            int8_dot,
            stored_weights: weights == "stored",
            model,
            prompt,
            chat,
            system,
            max_tokens,
            temperature,
            top_p,
            seed,
            json,
            tokenizer,
        }),
        Command::Codegen {
            model,
            arch,
            output,
            dtype,
            render_only,
            ptxas,
            allow_spills,
        } => commands::codegen::run(&commands::codegen::CodegenArgs {
            model,
            arch,
            output,
            dtype,
            render_only,
            ptxas,
            allow_spills,
            quiet: false,
        }),
        Command::Tune {
            model,
            kernel,
            shape,
            dtype,
            batch,
            seq,
            db,
        } => commands::tune::run(&commands::tune::TuneArgs {
            model,
            kernel,
            shape,
            dtype,
            batch,
            seq,
            db,
        }),
        Command::GpuBench {
            model,
            dtype,
            batch,
            prefill_batch,
            seq,
            json,
        } => commands::tune::gpu_bench(&commands::tune::GpuBenchArgs {
            model,
            dtype,
            batch,
            prefill_batch,
            seq,
            json,
        }),
        Command::Synth {
            arch,
            output,
            seed,
            dtype,
        } => commands::synth::run(&arch, &output, seed, &dtype),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}
