//! `jetc generate`: text generation on the CPU executor. The model is a GGUF file (tokenizer
//! and chat template from its metadata) or an ONNX decoder with a Hugging Face
//! `tokenizer.json` beside it (and, for `--chat`, a chat template in `tokenizer_config.json`
//! or `chat_template.jinja`). The text streams to stdout as tokens come; the throughput goes
//! to stderr; `--json` prints one JSON object instead.
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Instant;

use jetc::generate::{GenerateOptions, Generator, Sampling, StopReason};
use jetc::pipeline::is_gguf;
use jetc_text::{ChatTemplate, Message, Tokenizer};
use serde_json::json;

use crate::error::{CliError, Result};
use crate::load;

pub struct GenerateArgs {
    pub model: PathBuf,
    pub prompt: Option<String>,
    pub chat: Option<String>,
    pub system: Option<String>,
    pub max_tokens: usize,
    pub temperature: Option<f32>,
    pub top_p: Option<f32>,
    pub seed: u64,
    pub json: bool,
    /// The tokenizer (and chat template) from elsewhere: a .gguf, a tokenizer.json or the
    /// directory holding one.
    pub tokenizer: Option<PathBuf>,
    /// Keep a GGUF's weights in their stored precision (else de-quantize them to f32 at load).
    pub stored_weights: bool,
    /// Integer dot products on 8-bit activations for Q4_0/Q4_1/Q8_0 weights (decode path).
    pub int8_dot: bool,
}

fn msg(e: impl std::fmt::Display) -> CliError {
    CliError::Msg(e.to_string())
}

/// The tokenizer and chat template of a Hugging Face `tokenizer.json` (a file, or the
/// directory holding it; the template from `tokenizer_config.json` beside it, if any).
fn text_of_hf(path: &Path) -> Result<(Tokenizer, Option<ChatTemplate>)> {
    let dir = if path.is_dir() { path.to_path_buf() } else { path.parent().map(Path::to_path_buf).unwrap_or_default() };
    let tok = Tokenizer::from_file(path).map_err(msg)?;
    let template = ChatTemplate::from_tokenizer_config(&dir.join("tokenizer_config.json")).map_err(msg)?;
    Ok((tok, template))
}

/// The tokenizer and (if any) chat template of a `--tokenizer` path: a .gguf, a
/// tokenizer.json, or a directory holding one.
pub(crate) fn text_from(path: &Path) -> Result<(Tokenizer, Option<ChatTemplate>)> {
    if path.is_file() && is_gguf(path) {
        let file = jetc_gguf::GgufFile::open(path).map_err(msg)?;
        return jetc_text::from_gguf(&file).map_err(msg);
    }
    text_of_hf(path)
}

/// The tokenizer and (if any) chat template of `model`.
/// The tokenizer (and chat template) of `tokenizer` when given, else the model's own.
pub(crate) fn text_for(tokenizer: &Option<std::path::PathBuf>, model: &Path) -> Result<(Tokenizer, Option<ChatTemplate>)> {
    match tokenizer {
        Some(p) => text_from(p),
        None => text_of(model),
    }
}

pub(crate) fn text_of(model: &Path) -> Result<(Tokenizer, Option<ChatTemplate>)> {
    if is_gguf(model) {
        let file = jetc_gguf::GgufFile::open(model).map_err(msg)?;
        // A model jetc cannot build is named as such before its tokenizer is read.
        jetc::gguf_model::arch_of(&file).map_err(msg)?;
        return jetc_text::from_gguf(&file).map_err(msg);
    }
    if model.extension().and_then(|e| e.to_str()) != Some("onnx") {
        return Err(msg(format!(
            "{}: a model with text is a .gguf, or an .onnx with tokenizer.json beside it (or give --tokenizer PATH)",
            model.display()
        )));
    }
    let dir = model.parent().filter(|d| !d.as_os_str().is_empty()).unwrap_or(Path::new("."));
    let tokenizer = dir.join("tokenizer.json");
    if !tokenizer.is_file() {
        return Err(msg(format!(
            "{}: no tokenizer: an ONNX model needs a Hugging Face tokenizer.json beside it ({} does not exist), or --tokenizer PATH (a .gguf or tokenizer.json)",
            model.display(),
            tokenizer.display()
        )));
    }
    text_of_hf(&tokenizer)
}

/// The prompt's token ids: raw text (with the tokenizer's BOS), or a rendered chat.
fn prompt_ids(args: &GenerateArgs, tok: &Tokenizer, template: Option<&ChatTemplate>) -> Result<Vec<u32>> {
    match (&args.prompt, &args.chat) {
        (Some(_), Some(_)) => Err(msg("give either --prompt or --chat, not both")),
        (None, None) => Err(msg("nothing to generate from: give --prompt TEXT or --chat TEXT")),
        (Some(p), None) => {
            if args.system.is_some() {
                return Err(msg("--system goes with --chat (a raw --prompt has no roles)"));
            }
            tok.encode(p, true).map_err(msg)
        }
        (None, Some(c)) => {
            let template = template.ok_or_else(|| {
                msg(format!("{}: the model has no chat template; use --prompt", args.model.display()))
            })?;
            let mut messages = Vec::new();
            if let Some(s) = &args.system {
                messages.push(Message::new("system", s.as_str()));
            }
            messages.push(Message::new("user", c.as_str()));
            let text = template.render(&messages, true).map_err(msg)?;
            // The template writes its own special tokens (BOS, turn markers), as
            // transformers' apply_chat_template tokenizes it.
            tok.encode(&text, false).map_err(msg)
        }
    }
}

/// The process's peak resident set (Linux `VmHWM`), if the system reports it.
pub(crate) fn peak_rss_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

fn sampling(args: &GenerateArgs) -> Result<Sampling> {
    match (args.temperature, args.top_p) {
        (None, None) => Ok(Sampling::Greedy),
        (None, Some(_)) => Err(msg("--top-p needs --temperature")),
        (Some(temperature), top_p) => Ok(Sampling::TopP { temperature, top_p: top_p.unwrap_or(1.0), seed: args.seed }),
    }
}

pub fn run(args: &GenerateArgs) -> Result<()> {
    jetc_runtime::quant::q8::set_int8_dot(args.int8_dot);
    let started = Instant::now();
    let (tok, template) = match &args.tokenizer {
        Some(path) => text_from(path)?,
        None => text_of(&args.model)?,
    };
    let ids = prompt_ids(args, &tok, template.as_ref())?;
    let sampling = sampling(args)?;
    // Weights stay in the file's precision (a GGUF's blocks): the matmuls de-quantize them.
    let precision = if args.stored_weights { load::Precision::Stored } else { load::Precision::F32 };
    let g = load::load_raised_with(&args.model, precision)?;
    let mut generator = Generator::new(&g).map_err(msg)?;
    // Weights are converted for the executor once, here, so that prefill times the prompt.
    generator.warm_up().map_err(msg)?;
    let load_s = started.elapsed().as_secs_f64();
    let opts = GenerateOptions { max_tokens: args.max_tokens, sampling, stop_ids: tok.eos_ids() };

    // Streaming through the tokenizer's stream decoder: each token costs a short re-decode
    // (not the whole text so far), and a character spread over several tokens is printed
    // once whole.
    let mut printed = String::new();
    let mut failure: Option<CliError> = None;
    let stream = !args.json;
    let mut decoder = tok.stream_decoder(true);
    let mut on_token = |id: u32| -> bool {
        if !stream {
            return true;
        }
        match decoder.step(id) {
            Ok(Some(piece)) => {
                let mut out = std::io::stdout().lock();
                if out.write_all(piece.as_bytes()).and_then(|_| out.flush()).is_err() {
                    return false; // stdout closed (e.g. piped into head)
                }
                printed.push_str(&piece);
                true
            }
            Ok(None) => true,
            Err(e) => {
                failure = Some(msg(e));
                false
            }
        }
    };
    let result = generator.generate(&ids, &opts, &mut on_token).map_err(msg)?;
    if let Some(e) = failure {
        return Err(e);
    }
    let text = tok.decode(&result.ids, true).map_err(msg)?;
    // The whole exchange, prompt and completion with their special tokens (turn markers,
    // the end of turn): text that tokenizes back to the ids the model saw, e.g. to train a
    // student on the teacher's own answers.
    let transcript = if args.json {
        let mut all: Vec<u32> = ids.iter().chain(&result.ids).copied().collect();
        if let StopReason::Eos(id) = result.stop {
            all.push(id);
        }
        Some(tok.decode(&all, false).map_err(msg)?)
    } else {
        None
    };
    let stop = match result.stop {
        StopReason::Eos(_) => "eos",
        StopReason::MaxTokens => "max_tokens",
        StopReason::Callback => "stopped",
    };
    if args.json {
        let j = json!({
            "model": args.model.display().to_string(),
            "prompt_tokens": result.prompt_tokens,
            "prompt_ids": ids,
            "text": text,
            "ids": result.ids,
            "transcript": transcript,
            "generated_tokens": result.ids.len(),
            "stop": stop,
            "load_s": load_s,
            "prefill_s": result.prefill.as_secs_f64(),
            "decode_s": result.decode.as_secs_f64(),
            "decode_steps": result.decode_steps,
            "prefill_tokens_per_s": result.prefill_tokens_per_s(),
            "decode_tokens_per_s": result.decode_tokens_per_s(),
            "weight_bytes": generator.session().weight_bytes(),
            "dense_weight_bytes": generator.session().dense_weight_bytes(),
            "peak_rss_bytes": peak_rss_bytes(),
            "int8_dot": args.int8_dot,
        });
        println!("{}", serde_json::to_string_pretty(&j).map_err(msg)?);
    } else {
        // What the last decode left unprinted (a trailing incomplete character).
        if let Some(rest) = text.strip_prefix(printed.as_str()) {
            print!("{rest}");
        }
        println!();
        eprintln!(
            "[{} prompt tokens: prefill {:.1} tok/s ({:.0} ms); {} generated ({stop}): decode {:.1} tok/s; load {:.2} s]",
            result.prompt_tokens,
            result.prefill_tokens_per_s(),
            result.prefill.as_secs_f64() * 1e3,
            result.ids.len(),
            result.decode_tokens_per_s(),
            load_s
        );
    }
    Ok(())
}
