//! Fuzz-style properties: random bytes and mutated valid files never panic the reader (and
//! whatever opens can be de-quantized and converted without panicking).
use jetc_gguf::{GgmlType, GgufFile, GgufWriter, MetaArray, MetaValue};
use proptest::prelude::*;

fn golden_bytes() -> &'static [u8] {
    static BYTES: std::sync::OnceLock<Vec<u8>> = std::sync::OnceLock::new();
    BYTES.get_or_init(|| {
        std::fs::read(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../tests/golden/gguf/all_types.gguf"
        ))
        .unwrap()
    })
}

/// A small valid file with every kind of metadata and one tensor per kernel.
fn small_file() -> &'static [u8] {
    static BYTES: std::sync::OnceLock<Vec<u8>> = std::sync::OnceLock::new();
    BYTES.get_or_init(|| {
        let mut w = GgufWriter::new()
            .alignment(16)
            .kv("s", MetaValue::String("x".into()))
            .kv("b", MetaValue::Bool(true))
            .kv(
                "a",
                MetaValue::Array(MetaArray::Array(vec![
                    MetaArray::String(vec!["t".into()]),
                    MetaArray::I32(vec![1]),
                ])),
            )
            .kv("f", MetaValue::F64(1.5));
        for ty in jetc_gguf::DEQUANTIZABLE {
            let bs = ty.block_size() as u64;
            let bytes = (0..ty.type_size())
                .map(|i| (i * 37 % 251) as u8 & 0x3b)
                .collect();
            w = w.tensor(ty.name(), &[bs], ty, bytes);
        }
        w.to_bytes()
    })
}

/// Opens, and exercises everything a user would call.
fn exercise(bytes: &[u8]) {
    if let Ok(f) = GgufFile::from_bytes("fuzz.gguf", bytes) {
        for key in f.metadata.keys() {
            let _ = (
                f.get_u32(key),
                f.get_f32(key),
                f.get_str(key),
                f.get_str_array(key),
                f.get_bool(key),
            );
        }
        for t in &f.tensors {
            let _ = t.shape();
            let d = f.dequantize(t);
            let ir = f.to_ir_tensor(t);
            if t.ggml_type.can_dequantize() {
                let (d, ir) = (
                    d.expect("a parsed tensor of a supported type de-quantizes"),
                    ir.unwrap(),
                );
                assert_eq!(d.len() as u64, t.n_elements());
                assert_eq!(ir.numel() as u64, t.n_elements());
            }
        }
    }
}

fn mutate(
    base: &[u8],
    edits: &[(usize, u8)],
    u64_edits: &[(usize, u64)],
    cut: Option<usize>,
) -> Vec<u8> {
    let mut b = base.to_vec();
    // Concentrate on the header, where the structure is.
    let header_len = GgufFile::from_bytes("base", base)
        .map(|f| f.data_offset as usize)
        .unwrap_or(b.len())
        .min(b.len());
    for &(pos, byte) in edits {
        let i = pos % header_len;
        b[i] = byte;
    }
    for &(pos, v) in u64_edits {
        let i = pos % header_len.saturating_sub(8).max(1);
        if i + 8 <= b.len() {
            b[i..i + 8].copy_from_slice(&v.to_le_bytes());
        }
    }
    if let Some(c) = cut {
        b.truncate(c % (b.len() + 1));
    }
    b
}

fn interesting_u64() -> impl Strategy<Value = u64> {
    prop_oneof![
        any::<u64>(),
        Just(0u64),
        Just(u64::MAX),
        (0u32..64).prop_map(|s| 1u64 << s),
        (0u64..100_000),
    ]
}

proptest! {
    // No regression files: the tests/ directory has no lib.rs for proptest to put them next to.
    #![proptest_config(ProptestConfig { cases: 1024, failure_persistence: None, .. ProptestConfig::default() })]

    #[test]
    fn random_bytes_never_panic(mut bytes in proptest::collection::vec(any::<u8>(), 0..600), gguf_prefix in any::<bool>()) {
        if gguf_prefix && bytes.len() >= 8 {
            bytes[..4].copy_from_slice(b"GGUF");
            bytes[4..8].copy_from_slice(&3u32.to_le_bytes());
        }
        exercise(&bytes);
    }

    #[test]
    fn mutated_golden_never_panics(
        edits in proptest::collection::vec((any::<usize>(), any::<u8>()), 0..4),
        u64_edits in proptest::collection::vec((any::<usize>(), interesting_u64()), 0..2),
        cut in proptest::option::weighted(0.2, any::<usize>()),
    ) {
        exercise(&mutate(golden_bytes(), &edits, &u64_edits, cut));
    }

    #[test]
    fn mutated_small_file_never_panics(
        edits in proptest::collection::vec((any::<usize>(), any::<u8>()), 0..4),
        u64_edits in proptest::collection::vec((any::<usize>(), interesting_u64()), 0..2),
        cut in proptest::option::weighted(0.2, any::<usize>()),
    ) {
        exercise(&mutate(small_file(), &edits, &u64_edits, cut));
    }

    #[test]
    fn random_blocks_dequantize_without_panic(ty_index in 0usize..13, data in proptest::collection::vec(any::<u8>(), 0..1200)) {
        let ty: GgmlType = jetc_gguf::DEQUANTIZABLE[ty_index];
        let n_blocks = data.len() / ty.type_size();
        let mut out = vec![0f32; n_blocks * ty.block_size()];
        jetc_gguf::quant::dequantize_into(ty, &data[..n_blocks * ty.type_size()], &mut out).unwrap();
    }
}

#[test]
fn small_file_is_valid() {
    let f = GgufFile::from_bytes("small", small_file()).unwrap();
    assert_eq!(f.alignment, 16);
    assert_eq!(f.tensors.len(), 13);
    exercise(small_file());
}
