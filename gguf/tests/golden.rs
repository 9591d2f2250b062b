//! Golden tests against gguf-py 0.19.0: tests/golden/gguf/all_types.gguf was written by
//! `gguf.GGUFWriter` and all_types_ref.npz holds `gguf.quants.dequantize` of each tensor
//! (scripts/make_gguf_goldens.py). De-quantized values must match bit for bit; every
//! metadata value written by the script is checked here.
use std::path::PathBuf;

use jetc_gguf::{GgmlType, GgufError, GgufFile, MetaArray, MetaType, MetaValue, DEQUANTIZABLE};
use jetc_runtime::npz::read_npz;

fn golden_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../tests/golden/gguf")
}

fn open() -> GgufFile {
    GgufFile::open(golden_dir().join("all_types.gguf")).expect("open golden GGUF")
}

fn reference() -> Vec<(String, Vec<usize>, Vec<f32>)> {
    read_npz(&golden_dir().join("all_types_ref.npz"))
        .expect("read reference npz")
        .into_iter()
        .map(|(name, v)| {
            let a = v.as_f32().unwrap_or_else(|| panic!("{name} is not f32"));
            (name, a.shape().to_vec(), a.iter().copied().collect())
        })
        .collect()
}

fn assert_bitwise(name: &str, got: &[f32], want: &[f32]) {
    assert_eq!(got.len(), want.len(), "{name}: length");
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        assert_eq!(
            g.to_bits(),
            w.to_bits(),
            "{name}[{i}]: got {g:e} ({:#010x}), gguf-py {w:e} ({:#010x})",
            g.to_bits(),
            w.to_bits()
        );
    }
}

#[test]
fn header_layout() {
    let f = open();
    assert_eq!(f.version, 3);
    assert_eq!(f.alignment, 64);
    assert_eq!(f.data_offset % 64, 0);
    // 8 quantizable types with a `.quant` tensor, 13 `.random` tensors, one IQ4_NL.
    assert_eq!(f.tensors.len(), 8 + 13 + 1);
    let t = f.tensor("q4_0.quant").unwrap();
    assert_eq!(t.dims, vec![64, 3, 2]);
    assert_eq!(t.shape(), vec![2, 3, 64]);
    assert_eq!(t.ggml_type, GgmlType::Q4_0);
    assert_eq!(t.byte_len, 6 * 2 * 18);
    let t = f.tensor("q8_0.random").unwrap();
    assert_eq!(t.dims, vec![256]);
    assert_eq!(t.byte_len, 8 * 34);
    let t = f.tensor("iq4_nl.unsupported").unwrap();
    assert_eq!(
        (t.ggml_type, t.dims.clone(), t.byte_len),
        (GgmlType::IQ4_NL, vec![32, 2], 36)
    );
    for t in &f.tensors {
        assert_eq!(t.offset % 64, 0, "{}", t.name);
    }
    // Every de-quantizable type is present.
    for ty in DEQUANTIZABLE {
        assert!(
            f.tensors.iter().any(|t| t.ggml_type == ty),
            "{ty} missing from the golden file"
        );
    }
}

#[test]
fn dequantize_matches_gguf_py_bitwise() {
    let f = open();
    let refs = reference();
    assert_eq!(refs.len(), 21);
    for (name, shape, want) in &refs {
        let info = f
            .tensor(name)
            .unwrap_or_else(|| panic!("{name} not in the GGUF file"));
        assert_eq!(&info.shape(), shape, "{name}: shape");
        let got = f.dequantize(info).unwrap();
        assert_bitwise(name, &got, want);
    }
}

#[test]
fn ir_tensors_match_and_f32_is_mapped() {
    let f = open();
    for (name, shape, want) in reference() {
        let info = f.tensor(&name).unwrap();
        let t = f.to_ir_tensor(info).unwrap();
        assert_eq!(t.dtype(), jetc_ir::DType::F32);
        assert_eq!(t.shape(), &shape[..], "{name}");
        assert_eq!(
            t.is_mapped(),
            info.ggml_type == GgmlType::F32,
            "{name}: mapped iff F32"
        );
        assert_bitwise(&name, &t.to_f32_vec(), &want);
    }
}

#[test]
fn unsupported_known_type_is_a_clear_error() {
    let f = open();
    let info = f.tensor("iq4_nl.unsupported").unwrap();
    assert_eq!(f.tensor_data(info).unwrap().len(), 36);
    for err in [
        f.dequantize(info).unwrap_err(),
        f.to_ir_tensor(info).unwrap_err(),
    ] {
        assert!(
            matches!(
                err,
                GgufError::UnsupportedType {
                    ty: GgmlType::IQ4_NL,
                    ..
                }
            ),
            "{err}"
        );
        let msg = err.to_string();
        assert!(
            msg.contains("all_types.gguf")
                && msg.contains("iq4_nl.unsupported")
                && msg.contains("IQ4_NL (id 20)"),
            "{msg}"
        );
    }
}

#[test]
fn every_metadata_value() {
    let f = open();
    let m = &f.metadata;
    let s = |v: &[&str]| v.iter().map(|x| x.to_string()).collect::<Vec<_>>();
    let expected: Vec<(&str, MetaValue)> = vec![
        ("general.architecture", MetaValue::String("llama".into())),
        ("general.alignment", MetaValue::U32(64)),
        ("test.u8", MetaValue::U8(200)),
        ("test.i8", MetaValue::I8(-100)),
        ("test.u16", MetaValue::U16(60000)),
        ("test.i16", MetaValue::I16(-30000)),
        ("test.u32", MetaValue::U32(4_000_000_000)),
        ("test.i32", MetaValue::I32(-2_000_000_000)),
        ("test.f32", MetaValue::F32(std::f32::consts::PI)),
        ("test.bool_true", MetaValue::Bool(true)),
        ("test.bool_false", MetaValue::Bool(false)),
        ("test.string", MetaValue::String("héllo wörld ✓".into())),
        ("test.empty_string", MetaValue::String(String::new())),
        ("test.u64", MetaValue::U64((1u64 << 63) + 5)),
        ("test.i64", MetaValue::I64(-(1i64 << 62) - 3)),
        ("test.f64", MetaValue::F64(std::f64::consts::E)),
        (
            "test.arr_u8",
            MetaValue::Array(MetaArray::U8(vec![0, 1, 255])),
        ),
        (
            "test.arr_i8",
            MetaValue::Array(MetaArray::I8(vec![-128, 0, 127])),
        ),
        (
            "test.arr_u16",
            MetaValue::Array(MetaArray::U16(vec![0, 65535])),
        ),
        (
            "test.arr_i16",
            MetaValue::Array(MetaArray::I16(vec![-32768, 32767])),
        ),
        (
            "test.arr_u32",
            MetaValue::Array(MetaArray::U32(vec![0, u32::MAX])),
        ),
        (
            "test.arr_i32",
            MetaValue::Array(MetaArray::I32(vec![i32::MIN, i32::MAX, 7])),
        ),
        (
            "test.arr_f32",
            MetaValue::Array(MetaArray::F32(vec![0.5, -2.25, 1e30])),
        ),
        (
            "test.arr_bool",
            MetaValue::Array(MetaArray::Bool(vec![true, false, true])),
        ),
        (
            "test.arr_str",
            MetaValue::Array(MetaArray::String(s(&["a", "", "ünï", "<|im_end|>"]))),
        ),
        (
            "test.arr_u64",
            MetaValue::Array(MetaArray::U64(vec![0, u64::MAX])),
        ),
        (
            "test.arr_i64",
            MetaValue::Array(MetaArray::I64(vec![i64::MIN, i64::MAX])),
        ),
        (
            "test.arr_f64",
            MetaValue::Array(MetaArray::F64(vec![0.1, -1e300])),
        ),
        (
            "test.arr_nested",
            MetaValue::Array(MetaArray::Array(vec![
                MetaArray::I32(vec![1, 2]),
                MetaArray::I32(vec![3]),
                MetaArray::I32(vec![4, 5, 6]),
            ])),
        ),
        ("llama.block_count", MetaValue::U32(2)),
        ("llama.context_length", MetaValue::U32(128)),
        ("llama.embedding_length", MetaValue::U32(64)),
        ("llama.attention.head_count", MetaValue::U32(4)),
        ("llama.attention.head_count_kv", MetaValue::U32(2)),
        ("llama.rope.freq_base", MetaValue::F32(10000.0)),
        (
            "llama.attention.layer_norm_rms_epsilon",
            MetaValue::F32(1e-5),
        ),
    ];
    for (k, v) in &expected {
        let got = m.get(*k).unwrap_or_else(|| panic!("missing {k}"));
        // Bitwise for floats, so that e.g. -0.0 vs 0.0 would show.
        match (got, v) {
            (MetaValue::F32(a), MetaValue::F32(b)) => assert_eq!(a.to_bits(), b.to_bits(), "{k}"),
            (MetaValue::F64(a), MetaValue::F64(b)) => assert_eq!(a.to_bits(), b.to_bits(), "{k}"),
            _ => assert_eq!(got, v, "{k}"),
        }
    }
    assert_eq!(
        m.len(),
        expected.len(),
        "unexpected extra keys: {:?}",
        m.keys().collect::<Vec<_>>()
    );
    assert_eq!(
        m["test.arr_nested"].as_array().unwrap().elem_type(),
        MetaType::Array
    );
}

#[test]
fn typed_getters() {
    let f = open();
    assert_eq!(f.architecture().unwrap(), "llama");
    assert_eq!(f.get_u32("llama.block_count").unwrap(), 2);
    assert_eq!(f.get_u32("test.u8").unwrap(), 200);
    assert_eq!(f.get_u64("test.u64").unwrap(), (1u64 << 63) + 5);
    assert_eq!(f.get_i64("test.i8").unwrap(), -100);
    assert_eq!(f.get_f32("llama.rope.freq_base").unwrap(), 10000.0);
    assert_eq!(f.get_f64("test.f64").unwrap(), std::f64::consts::E);
    assert!(f.get_bool("test.bool_true").unwrap());
    assert_eq!(f.get_str("test.string").unwrap(), "héllo wörld ✓");
    assert_eq!(f.get_str_array("test.arr_str").unwrap()[2], "ünï");
    assert_eq!(
        f.get_f32_array("test.arr_f32").unwrap(),
        &[0.5, -2.25, 1e30]
    );
    assert_eq!(
        f.get_i32_array("test.arr_i32").unwrap(),
        &[i32::MIN, i32::MAX, 7]
    );
    assert_eq!(
        f.get_array("test.arr_u16").unwrap().to_integers().unwrap(),
        vec![0, 65535]
    );

    // Out of range, wrong type, missing: errors that name the file and the key.
    let e = f.get_u32("test.i8").unwrap_err().to_string();
    assert!(
        e.contains("all_types.gguf")
            && e.contains("`test.i8`")
            && e.contains("u32")
            && e.contains("-100"),
        "{e}"
    );
    let e = f.get_u32("test.u64").unwrap_err().to_string();
    assert!(e.contains("`test.u64`"), "{e}");
    let e = f.get_str("test.u8").unwrap_err().to_string();
    assert!(e.contains("expected STRING, found UINT8 200"), "{e}");
    let e = f.get_str_array("test.arr_i32").unwrap_err().to_string();
    assert!(e.contains("ARRAY of 3 INT32"), "{e}");
    let e = f.get_f32("no.such.key").unwrap_err();
    assert!(matches!(e, GgufError::MissingKey { .. }));
    assert!(e.to_string().contains("`no.such.key` is missing"), "{e}");
}
