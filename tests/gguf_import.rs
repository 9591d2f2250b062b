//! GGUF model import (`jetc::gguf_model`) on small files written here: the weights of a
//! synthetic decoder (`jetc::synth`) are laid out the way llama.cpp's `convert_hf_to_gguf.py`
//! writes them (PyTorch `[out, in]` rows, dims reversed, llama's q/k rows permuted for its
//! interleaved RoPE; qwen2 unpermuted with q/k/v biases), read back through
//! `pipeline::load_raised`, and must compute exactly the logits of the original graph. A file
//! written without the permutation must not (the check has teeth). Broken files give errors
//! that name the file and the key or tensor.
use std::path::PathBuf;

use jetc::generate::{Generator, Logits};
use jetc::ir::{DType, Graph, Op};
use jetc::passes::summary::summarize;
use jetc::pipeline::{import_with, load, load_raised, load_raised_with, Precision};
use jetc::synth::{arch, build, ArchConfig};
use jetc_gguf::{GgmlType, GgufWriter, MetaArray, MetaValue};

/// One GGUF tensor: name, GGUF dims (innermost first), f32 data.
type Entry = (String, Vec<u64>, Vec<f32>);

fn weight(g: &Graph, name: &str) -> (Vec<usize>, Vec<f32>) {
    for id in g.node_ids() {
        let n = g.node(id).expect("node");
        if let Op::Const(t) = &n.op {
            if n.name == name {
                return (t.shape().to_vec(), t.to_f32_vec());
            }
        }
    }
    panic!("no weight {name}");
}

/// convert_hf_to_gguf.py's `permute`: `w.reshape(n_head, 2, rows/n_head/2, ...)
/// .swapaxes(1, 2).reshape(w.shape)`, as the list of source rows of each output row.
fn llama_cpp_permute(rows: usize, heads: usize) -> Vec<usize> {
    let hd = rows / heads;
    let mut src = Vec::with_capacity(rows);
    for h in 0..heads {
        for i in 0..hd / 2 {
            for s in 0..2 {
                src.push(h * hd + s * (hd / 2) + i);
            }
        }
    }
    src
}

/// The GGUF tensors of a synth graph. `permute`: apply llama.cpp's q/k row permutation.
/// GGUF matrices (dims [in, out], rows of `in` values) stacked along their rows.
fn stack_rows(name: &str, parts: Vec<Entry>) -> Entry {
    let n_in = parts[0].1[0];
    let rows: u64 = parts.iter().map(|p| p.1[1]).sum();
    (name.into(), vec![n_in, rows], parts.into_iter().flat_map(|p| p.2).collect())
}

fn tensors_of(g: &Graph, cfg: &ArchConfig, permute: bool) -> Vec<Entry> {
    tensors_for(g, cfg, permute, false)
}

/// `packed`: Phi-3's layout (`attn_qkv`, gate|up in `ffn_up`).
fn tensors_for(g: &Graph, cfg: &ArchConfig, permute: bool, packed: bool) -> Vec<Entry> {
    let mut out: Vec<Entry> = Vec::new();
    let plain = |out: &mut Vec<Entry>, hf: &str, gg: &str| {
        let (shape, data) = weight(g, hf);
        out.push((gg.into(), shape.iter().rev().map(|&d| d as u64).collect(), data));
    };
    // A graph matrix [in, out] becomes the PyTorch [out, in] rows, optionally permuted.
    let matrix = |out: &mut Vec<Entry>, hf: &str, gg: &str, heads: Option<usize>| {
        let (shape, data) = weight(g, hf);
        let (n_in, n_out) = (shape[0], shape[1]);
        let rows: Vec<usize> = match heads {
            Some(h) if permute => llama_cpp_permute(n_out, h),
            _ => (0..n_out).collect(),
        };
        let mut t = Vec::with_capacity(data.len());
        for &r in &rows {
            for c in 0..n_in {
                t.push(data[c * n_out + r]);
            }
        }
        out.push((gg.into(), vec![n_in as u64, n_out as u64], t));
    };
    plain(&mut out, "model.embed_tokens.weight", "token_embd.weight");
    for l in 0..cfg.layers {
        let hf = |w: &str| format!("model.layers.{l}.{w}");
        let gg = |w: &str| format!("blk.{l}.{w}");
        plain(&mut out, &hf("input_layernorm.weight"), &gg("attn_norm.weight"));
        if packed {
            // Phi-3: q|k|v rows in one `attn_qkv`.
            let mut parts = Vec::new();
            for w in ["q", "k", "v"] {
                matrix(&mut parts, &hf(&format!("self_attn.{w}_proj.weight")), "part", None);
            }
            out.push(stack_rows(&gg("attn_qkv.weight"), parts));
        } else {
            matrix(&mut out, &hf("self_attn.q_proj.weight"), &gg("attn_q.weight"), Some(cfg.heads));
            matrix(&mut out, &hf("self_attn.k_proj.weight"), &gg("attn_k.weight"), Some(cfg.kv_heads));
            matrix(&mut out, &hf("self_attn.v_proj.weight"), &gg("attn_v.weight"), None);
        }
        if cfg.qkv_bias {
            // Biases are permuted like their weights' rows.
            for (w, gname, heads) in [("q", "attn_q.bias", Some(cfg.heads)), ("k", "attn_k.bias", Some(cfg.kv_heads)), ("v", "attn_v.bias", None)] {
                let (shape, data) = weight(g, &hf(&format!("self_attn.{w}_proj.bias")));
                let rows: Vec<usize> = match heads {
                    Some(h) if permute => llama_cpp_permute(shape[0], h),
                    _ => (0..shape[0]).collect(),
                };
                out.push((gg(gname), vec![shape[0] as u64], rows.iter().map(|&r| data[r]).collect()));
            }
        }
        if cfg.qk_norm {
            plain(&mut out, &hf("self_attn.q_norm.weight"), &gg("attn_q_norm.weight"));
            plain(&mut out, &hf("self_attn.k_norm.weight"), &gg("attn_k_norm.weight"));
        }
        matrix(&mut out, &hf("self_attn.o_proj.weight"), &gg("attn_output.weight"), None);
        plain(&mut out, &hf("post_attention_layernorm.weight"), &gg("ffn_norm.weight"));
        if packed {
            // Phi-3: gate|up rows in one `ffn_up`.
            let mut parts = Vec::new();
            matrix(&mut parts, &hf("mlp.gate_proj.weight"), "part", None);
            matrix(&mut parts, &hf("mlp.up_proj.weight"), "part", None);
            out.push(stack_rows(&gg("ffn_up.weight"), parts));
        } else {
            matrix(&mut out, &hf("mlp.gate_proj.weight"), &gg("ffn_gate.weight"), None);
            matrix(&mut out, &hf("mlp.up_proj.weight"), &gg("ffn_up.weight"), None);
        }
        matrix(&mut out, &hf("mlp.down_proj.weight"), &gg("ffn_down.weight"), None);
    }
    plain(&mut out, "model.norm.weight", "output_norm.weight");
    if let Some(f) = &cfg.rope_freq_factors {
        out.push(("rope_freqs.weight".into(), vec![f.len() as u64], f.clone()));
    }
    if !cfg.tied {
        matrix(&mut out, "lm_head.weight", "output.weight", None);
    }
    out
}

fn metadata(cfg: &ArchConfig, arch: &str) -> Vec<(String, MetaValue)> {
    let k = |s: &str| format!("{arch}.{s}");
    vec![
        ("general.architecture".into(), MetaValue::String(arch.into())),
        (k("block_count"), MetaValue::U32(cfg.layers as u32)),
        (k("context_length"), MetaValue::U32(2048)),
        (k("embedding_length"), MetaValue::U32(cfg.hidden as u32)),
        (k("feed_forward_length"), MetaValue::U32(cfg.intermediate as u32)),
        (k("attention.head_count"), MetaValue::U32(cfg.heads as u32)),
        (k("attention.head_count_kv"), MetaValue::U32(cfg.kv_heads as u32)),
        (k("rope.freq_base"), MetaValue::F32(cfg.rope_theta)),
        (k("attention.layer_norm_rms_epsilon"), MetaValue::F32(cfg.rms_eps)),
        (k("rope.dimension_count"), MetaValue::U32(cfg.head_dim as u32)),
        (k("attention.key_length"), MetaValue::U32(cfg.head_dim as u32)),
        (k("attention.value_length"), MetaValue::U32(cfg.head_dim as u32)),
        ("tokenizer.ggml.bos_token_id".into(), MetaValue::U32(1)),
        ("tokenizer.ggml.eos_token_id".into(), MetaValue::U32(2)),
        ("tokenizer.ggml.padding_token_id".into(), MetaValue::U32(0)),
        (
            "tokenizer.ggml.tokens".into(),
            MetaValue::Array(MetaArray::String((0..cfg.vocab).map(|i| format!("t{i}")).collect())),
        ),
    ]
}

fn write(name: &str, kvs: &[(String, MetaValue)], tensors: &[Entry]) -> PathBuf {
    let mut w = GgufWriter::new();
    for (k, v) in kvs {
        w = w.kv(k.clone(), v.clone());
    }
    for (n, dims, data) in tensors {
        w = w.tensor_f32(n.clone(), dims, data);
    }
    let dir = std::env::temp_dir().join(format!("jetc-gguf-import-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("tmp");
    let path = dir.join(name);
    std::fs::write(&path, w.to_bytes()).expect("write");
    path
}

fn logits(g: &Graph, ids: &[u32]) -> Logits {
    Generator::new(g).expect("generator").forward(ids).expect("forward")
}

fn rel(a: &Logits, b: &Logits) -> f64 {
    assert_eq!(a.data.len(), b.data.len());
    let m = b.data.iter().fold(0f64, |m, &v| m.max(v.abs() as f64));
    a.data.iter().zip(&b.data).fold(0f64, |d, (&x, &y)| d.max((x - y).abs() as f64)) / m
}

fn qwen2_tiny() -> ArchConfig {
    ArchConfig { name: "qwen2-tiny", qkv_bias: true, tied: true, rope_theta: 1e6, ..arch("llama-tiny").expect("arch") }
}

/// Llama with q/k/v biases (as some llama-architecture checkpoints have).
fn qwen3_tiny() -> ArchConfig {
    // head_dim 128 as every Qwen3 (transformers' GGUF loader takes it from the config class, not the file).
    ArchConfig { name: "qwen3-tiny", tied: true, rope_theta: 1e6, qk_norm: true, head_dim: 128, ..arch("llama-tiny").expect("arch") }
}

/// Llama 3 style: RoPE frequency factors (the low frequencies stretched 8x, as `llama3` rope
/// scaling does, the high ones kept).
fn llama3_tiny() -> ArchConfig {
    let base = arch("llama-tiny").expect("arch");
    let half = base.head_dim / 2;
    let factors = (0..half).map(|i| if i < half / 2 { 1.0 } else { 8.0 }).collect();
    ArchConfig { name: "llama3-tiny", rope_freq_factors: Some(factors), ..base }
}

fn phi3_tiny() -> ArchConfig {
    ArchConfig { name: "phi3-tiny", kv_heads: 4, rope_theta: 1e4, rms_eps: 1e-5, ..arch("llama-tiny").expect("arch") }
}

fn llama_bias() -> ArchConfig {
    ArchConfig { name: "llama-bias", qkv_bias: true, ..arch("llama-tiny").expect("arch") }
}

fn llama_mha_tied() -> ArchConfig {
    ArchConfig { name: "llama-mha", kv_heads: 4, tied: true, rms_eps: 1e-5, ..arch("llama-tiny").expect("arch") }
}

const IDS: [u32; 9] = [3, 77, 12, 5, 127, 64, 9, 33, 100];

#[test]
fn gguf_files_import_to_the_graph_they_came_from() {
    for (cfg, arch_name) in [(arch("llama-tiny").expect("arch"), "llama"), (llama_bias(), "llama"), (llama_mha_tied(), "llama"), (qwen2_tiny(), "qwen2"), (qwen3_tiny(), "qwen3"), (llama3_tiny(), "llama"), (phi3_tiny(), "phi3")] {
        let g = build(&cfg, 5, DType::F32).expect("synth");
        let want = logits(&g, &IDS);
        let path = write(&format!("{}.gguf", cfg.name), &metadata(&cfg, arch_name), &tensors_for(&g, &cfg, arch_name == "llama", arch_name == "phi3"));
        let raw = jetc::pipeline::import(&path).expect("import");
        let e = rel(&logits(&raw, &IDS), &want);
        assert!(e < 1e-6, "{}: imported logits rel err {e:e}", cfg.name);
        let raised = load_raised(&path).expect("load_raised");
        let e = rel(&logits(&raised, &IDS), &want);
        assert!(e < 1e-5, "{}: raised logits rel err {e:e}", cfg.name);
        // Raised like an ONNX export: the summary reads the architecture back.
        let s = summarize(&raised).expect("summary");
        assert_eq!((s.layers, s.hidden, s.vocab, s.intermediate, s.tied_embeddings), (cfg.layers, cfg.hidden, cfg.vocab, Some(cfg.intermediate), cfg.tied), "{}", cfg.name);
        for m in &s.mixers {
            assert_eq!((m.kind, m.heads, m.kv_heads, m.head_dim, m.rope), ("attention", cfg.heads, cfg.kv_heads, cfg.head_dim, true), "{}", cfg.name);
            assert_eq!(m.cache_bytes_per_token, 2 * cfg.kv_heads * cfg.head_dim * 4);
        }
        let text = jetc::ir::print::print_graph(&raised).expect("print");
        for op in ["Embedding(", "RmsNorm(", "Attention(", "SwiGlu("] {
            assert!(text.contains(op), "{}: no {op} after raising", cfg.name);
        }
        assert_eq!(text.contains("qk_norm_eps"), cfg.qk_norm, "{}: q/k norms raised into the attention", cfg.name);
        std::fs::remove_file(&path).ok();
    }
}

#[test]
fn llama_without_the_qk_permutation_computes_something_else() {
    let cfg = arch("llama-tiny").expect("arch");
    let g = build(&cfg, 5, DType::F32).expect("synth");
    let path = write("unpermuted.gguf", &metadata(&cfg, "llama"), &tensors_of(&g, &cfg, false));
    let e = rel(&logits(&load(&path).expect("load"), &IDS), &logits(&g, &IDS));
    std::fs::remove_file(&path).ok();
    assert!(e > 1e-3, "the q/k un-permutation makes no difference (rel {e:e}): the roundtrip test would not see it");
}

#[test]
fn quantized_tensors_are_dequantized_on_load() {
    // Q8_0 blocks of 32: scale 0.5 (f16 0x3800), quants -16..15 -> values -8..7.5.
    let cfg = arch("llama-tiny").expect("arch");
    let g = build(&cfg, 5, DType::F32).expect("synth");
    let mut tensors = tensors_of(&g, &cfg, true);
    let pos = tensors.iter().position(|t| t.0 == "blk.0.ffn_up.weight").expect("tensor");
    let (name, dims, _) = tensors.remove(pos);
    let n = (dims[0] * dims[1]) as usize;
    let mut bytes = Vec::new();
    let mut values = Vec::new();
    for b in 0..n / 32 {
        bytes.extend_from_slice(&0x3800u16.to_le_bytes());
        for i in 0..32 {
            let q = ((b * 7 + i) % 32) as i8 - 16;
            bytes.push(q as u8);
            values.push(q as f32 * 0.5);
        }
    }
    let mut w = GgufWriter::new();
    for (k, v) in metadata(&cfg, "llama") {
        w = w.kv(k, v);
    }
    for (n, d, data) in &tensors {
        w = w.tensor_f32(n.clone(), d, data);
    }
    w = w.tensor(name.clone(), &dims, GgmlType::Q8_0, bytes);
    let path = std::env::temp_dir().join(format!("jetc-gguf-import-{}-q8.gguf", std::process::id()));
    std::fs::write(&path, w.to_bytes()).expect("write");
    let gi = jetc::pipeline::import(&path).expect("import");
    let (shape, got) = weight(&gi, "model.layers.0.mlp.up_proj.weight");
    // [in, out] in the graph: element (c, r) is row r, column c of the GGUF matrix.
    let (n_in, n_out) = (shape[0], shape[1]);
    assert_eq!((n_in as u64, n_out as u64), (dims[0], dims[1]));
    for r in 0..n_out {
        for c in 0..n_in {
            assert_eq!(got[c * n_out + r], values[r * n_in + c]);
        }
    }
    std::fs::remove_file(&path).ok();
}

#[test]
fn broken_gguf_models_give_clear_errors() {
    let cfg = arch("llama-tiny").expect("arch");
    let g = build(&cfg, 5, DType::F32).expect("synth");
    let (kvs, tensors) = (metadata(&cfg, "llama"), tensors_of(&g, &cfg, true));
    let err = |name: &str, kvs: &[(String, MetaValue)], tensors: &[Entry]| -> String {
        let path = write(name, kvs, tensors);
        let e = load(&path).err().unwrap_or_else(|| panic!("{name}: loaded")).to_string();
        std::fs::remove_file(&path).ok();
        eprintln!("{name}: {e}");
        assert!(e.contains(&path.display().to_string()), "{name}: the error does not name the file: {e}");
        e
    };
    let set = |key: &str, v: MetaValue| -> Vec<(String, MetaValue)> {
        let mut k: Vec<_> = kvs.iter().filter(|(n, _)| n != key).cloned().collect();
        k.push((key.into(), v));
        k
    };
    let without_key = |key: &str| -> Vec<(String, MetaValue)> { kvs.iter().filter(|(n, _)| n != key).cloned().collect() };

    // Another architecture.
    let e = err("gpt2.gguf", &set("general.architecture", MetaValue::String("gpt2".into())), &tensors);
    assert!(e.contains("architecture `gpt2` is not supported") && e.contains("llama"), "{e}");
    // A missing metadata key.
    let e = err("nokey.gguf", &without_key("llama.embedding_length"), &tensors);
    assert!(e.contains("llama.embedding_length") && e.contains("missing"), "{e}");
    // A key of the wrong type.
    let e = err("badtype.gguf", &set("llama.block_count", MetaValue::String("two".into())), &tensors);
    assert!(e.contains("llama.block_count"), "{e}");
    // Heads that do not group.
    let e = err("heads.gguf", &set("llama.attention.head_count_kv", MetaValue::U32(3)), &tensors);
    assert!(e.contains("head_count 4 is not a multiple of head_count_kv 3"), "{e}");
    // RoPE scaling and partial rotary are refused, not ignored.
    let e = err("scaling.gguf", &set("llama.rope.scaling.type", MetaValue::String("yarn".into())), &tensors);
    assert!(e.contains("RoPE scaling"), "{e}");
    let e = err("partial.gguf", &set("llama.rope.dimension_count", MetaValue::U32(8)), &tensors);
    assert!(e.contains("partial rotary"), "{e}");
    // A missing tensor.
    let t: Vec<Entry> = tensors.iter().filter(|t| t.0 != "blk.1.ffn_up.weight").cloned().collect();
    let e = err("missing.gguf", &kvs, &t);
    assert!(e.contains("blk.1.ffn_up.weight") && e.contains("missing"), "{e}");
    // A tensor of the wrong shape.
    let mut t = tensors.clone();
    let k = t.iter_mut().find(|t| t.0 == "blk.0.attn_k.weight").expect("k");
    k.1 = vec![32, 64];
    let e = err("shape.gguf", &kvs, &t);
    assert!(e.contains("blk.0.attn_k.weight") && e.contains("expected row-major [32, 64]"), "{e}");
    // A vocabulary that does not match the embedding.
    let e = err(
        "vocab.gguf",
        &set("tokenizer.ggml.tokens", MetaValue::Array(MetaArray::String((0..100).map(|i| i.to_string()).collect()))),
        &tensors,
    );
    assert!(e.contains("token_embd.weight"), "{e}");
    // A tensor the graph has no place for (an unsupported variant) is not silently dropped.
    let mut t = tensors.clone();
    t.push(("blk.0.attn_output.bias".into(), vec![64], vec![0.0; 64]));
    let e = err("extra.gguf", &kvs, &t);
    assert!(e.contains("blk.0.attn_output.bias") && e.contains("no place"), "{e}");
}

/// The independent check of the GGUF conventions (tensor names and layouts, llama.cpp's q/k
/// row permutation, Qwen3's q/k norms): the same files loaded by transformers' own GGUF
/// loader (scripts/gguf_logits.py) give the same logits as jetc. Needs a Python with torch,
/// transformers and gguf in `JETC_TORCH_PYTHON`; skipped (with a note) otherwise.
#[test]
fn gguf_files_match_transformers_gguf_loader() {
    let Some(py) = std::env::var_os("JETC_TORCH_PYTHON").map(PathBuf::from) else {
        assert!(std::env::var_os("JETC_REQUIRE_TORCH").is_none(), "JETC_REQUIRE_TORCH is set but JETC_TORCH_PYTHON is not");
        eprintln!("note: JETC_TORCH_PYTHON not set; skipping the transformers GGUF check");
        return;
    };
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("scripts/gguf_logits.py");
    for (cfg, arch_name) in [(arch("llama-tiny").expect("arch"), "llama"), (qwen2_tiny(), "qwen2"), (qwen3_tiny(), "qwen3"), (phi3_tiny(), "phi3")] {
        let g = build(&cfg, 11, DType::F32).expect("synth");
        let path = write(&format!("hf-{}.gguf", cfg.name), &metadata(&cfg, arch_name), &tensors_for(&g, &cfg, arch_name == "llama", arch_name == "phi3"));
        let ours = logits(&load_raised(&path).expect("load_raised"), &IDS);
        let out = path.with_extension("npz");
        let mut cmd = std::process::Command::new(&py);
        cmd.arg(&script).arg(&path).arg(&out).args(IDS.iter().map(|i| i.to_string()));
        let o = cmd.output().expect("run python");
        assert!(o.status.success(), "{}: transformers failed: {}", cfg.name, String::from_utf8_lossy(&o.stderr));
        let arrays = jetc::runtime::npz::read_npz(&out).expect("read npz");
        let theirs = arrays.iter().find(|(n, _)| n == "logits").expect("logits").1.as_f32().expect("f32 logits").clone();
        let m = theirs.iter().fold(0f64, |m, &v| m.max(v.abs() as f64));
        let e = ours.data.iter().zip(theirs.iter()).fold(0f64, |d, (&x, &y)| d.max((x - y).abs() as f64)) / m;
        assert_eq!(ours.data.len(), theirs.len(), "{}", cfg.name);
        assert!(e < 1e-4, "{}: jetc vs transformers GGUF loader: rel err {e:e}", cfg.name);
        std::fs::remove_file(&path).ok();
        std::fs::remove_file(&out).ok();
    }
}

/// The frequency factors matter: the same weights without them give other logits.
#[test]
fn rope_frequency_factors_change_the_model() {
    let base = arch("llama-tiny").expect("arch");
    let with = ArchConfig { rope_freq_factors: Some(vec![8.0; base.head_dim / 2]), ..base.clone() };
    let without = base;
    let a = logits(&build(&with, 5, DType::F32).expect("synth"), &IDS);
    let b = logits(&build(&without, 5, DType::F32).expect("synth"), &IDS);
    assert!(rel(&a, &b) > 1e-4, "factors had no effect");
    let bad = ArchConfig { rope_freq_factors: Some(vec![1.0; 3]), ..with };
    assert!(build(&bad, 5, DType::F32).is_err_and(|e| e.to_string().contains("frequency factors")));
}

/// A GGUF file whose matrices and embedding table are in block formats (a different one per
/// tensor, cycling through `formats`), the 1-D tensors in f32.
fn write_quantized(name: &str, kvs: &[(String, MetaValue)], tensors: &[Entry], formats: &[(GgmlType, jetc::ir::blocks::BlockFormat)]) -> PathBuf {
    let mut w = GgufWriter::new();
    for (k, v) in kvs {
        w = w.kv(k.clone(), v.clone());
    }
    let mut matrices = 0;
    for (n, dims, data) in tensors {
        if dims.len() == 2 {
            let (ty, format) = formats[matrices % formats.len()];
            matrices += 1;
            w = w.tensor(n.clone(), dims, ty, format.encode(data).expect("encode"));
        } else {
            w = w.tensor_f32(n.clone(), dims, data);
        }
    }
    let path = std::env::temp_dir().join(format!("jetc-gguf-import-{}-{name}", std::process::id()));
    std::fs::write(&path, w.to_bytes()).expect("write");
    path
}

/// The logits of 20 ids (the prefill path of the quantized matmuls) and then of one more
/// (the decode path), and the f32 bytes the session had to make of stored weights.
fn prefill_then_step(g: &Graph) -> (Logits, Logits, usize) {
    let ids: Vec<u32> = (0..20).map(|i| (i * 37 + 11) % 128).collect();
    let mut gen = Generator::new(g).expect("generator");
    let a = gen.forward(&ids).expect("prefill");
    let b = gen.forward(&[42]).expect("step");
    (a, b, gen.session().dense_weight_bytes())
}

#[test]
fn stored_precision_weights_compute_what_their_f32_values_compute() {
    use jetc::ir::blocks::BlockFormat as F;
    let formats = [(GgmlType::Q8_0, F::Q8_0), (GgmlType::Q4_1, F::Q4_1), (GgmlType::Q4_0, F::Q4_0), (GgmlType::F16, F::F16), (GgmlType::BF16, F::BF16)];
    for (cfg, arch_name) in [(arch("llama-tiny").expect("arch"), "llama"), (llama_mha_tied(), "llama"), (qwen2_tiny(), "qwen2"), (phi3_tiny(), "phi3")] {
        let g = build(&cfg, 5, DType::F32).expect("synth");
        let tensors = tensors_for(&g, &cfg, arch_name == "llama", arch_name == "phi3");
        let path = write_quantized(&format!("{}-q.gguf", cfg.name), &metadata(&cfg, arch_name), &tensors, &formats);
        // The reference: the same file de-quantized to f32 on load.
        let (want_prefill, want_step, _) = prefill_then_step(&load_raised(&path).expect("f32 load"));
        for (what, graph) in [("imported", import_with(&path, Precision::Stored).expect("import")), ("raised", load_raised_with(&path, Precision::Stored).expect("load"))] {
            let consts: Vec<&jetc::ir::Tensor> = graph
                .node_ids()
                .filter_map(|id| match &graph.node(id).ok()?.op {
                    Op::Const(t) => Some(t),
                    _ => None,
                })
                .collect();
            let stored = consts.iter().filter(|t| t.stored().is_some()).count();
            // Every matrix and the table (and, tied, the head that reads the table's blocks).
            let matrices = tensors.iter().filter(|t| t.1.len() == 2).count();
            let want_stored = if arch_name == "phi3" { matrices + 3 * cfg.layers } else { matrices } + cfg.tied as usize;
            assert_eq!(stored, want_stored, "{} {what}: stored weights", cfg.name);
            assert!(consts.iter().all(|t| !t.is_decoded()), "{} {what}: loading de-quantized a weight", cfg.name);
            let (prefill, step, dense) = prefill_then_step(&graph);
            assert_eq!(dense, 0, "{} {what}: the session made f32 copies of stored weights", cfg.name);
            assert!(consts.iter().all(|t| !t.is_decoded()), "{} {what}: running de-quantized a weight", cfg.name);
            let (e1, e2) = (rel(&prefill, &want_prefill), rel(&step, &want_step));
            assert!(e1 < 2e-6 && e2 < 2e-6, "{} {what}: logits rel err {e1:e} (prefill), {e2:e} (step)", cfg.name);
        }
        std::fs::remove_file(&path).ok();
    }
}
