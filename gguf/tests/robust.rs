//! Corrupt and hostile files: each gives a clear error (naming the file and the key or
//! tensor), never a panic. Allocation bounds are checked in alloc_bounds.rs.
use jetc_gguf::write::{encode_str, encode_value};
use jetc_gguf::{
    GgmlType, GgufError, GgufFile, GgufWriter, MetaArray, MetaType, MetaValue, TensorInfo,
};

const NAME: &str = "test.gguf";

fn golden_bytes() -> Vec<u8> {
    std::fs::read(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../tests/golden/gguf/all_types.gguf"
    ))
    .unwrap()
}

fn parse(bytes: &[u8]) -> Result<GgufFile, GgufError> {
    GgufFile::from_bytes(NAME, bytes)
}

fn err(bytes: &[u8]) -> (GgufError, String) {
    let e = parse(bytes).expect_err("expected an error");
    let msg = e.to_string();
    assert!(
        msg.starts_with("test.gguf: "),
        "message does not name the file: {msg}"
    );
    (e, msg)
}

/// magic, version, tensor count, metadata count.
fn header(version: u32, n_tensors: u64, n_kv: u64) -> Vec<u8> {
    let mut b = b"GGUF".to_vec();
    b.extend_from_slice(&version.to_le_bytes());
    b.extend_from_slice(&n_tensors.to_le_bytes());
    b.extend_from_slice(&n_kv.to_le_bytes());
    b
}

fn push_kv(b: &mut Vec<u8>, key: &str, v: &MetaValue) {
    encode_str(key, b);
    b.extend_from_slice(&v.meta_type().id().to_le_bytes());
    encode_value(v, b);
}

fn push_tensor_info(b: &mut Vec<u8>, name: &str, dims: &[u64], type_id: u32, offset: u64) {
    encode_str(name, b);
    b.extend_from_slice(&(dims.len() as u32).to_le_bytes());
    for d in dims {
        b.extend_from_slice(&d.to_le_bytes());
    }
    b.extend_from_slice(&type_id.to_le_bytes());
    b.extend_from_slice(&offset.to_le_bytes());
}

fn one_tensor_file(dims: &[u64], type_id: u32, offset: u64, data_len: usize) -> Vec<u8> {
    let mut b = header(3, 1, 0);
    push_tensor_info(&mut b, "blk.0.w", dims, type_id, offset);
    b.resize(b.len().div_ceil(32) * 32 + data_len, 0);
    b
}

#[test]
fn round_trip_through_writer() {
    let values = [1.0f32, -2.5, 3.25, 0.0, f32::MIN_POSITIVE, -0.0];
    let bytes = GgufWriter::new()
        .kv("general.architecture", MetaValue::String("llama".into()))
        .kv(
            "a.nested",
            MetaValue::Array(MetaArray::Array(vec![
                MetaArray::Bool(vec![true]),
                MetaArray::Bool(vec![]),
            ])),
        )
        .kv("a.empty", MetaValue::Array(MetaArray::String(vec![])))
        .tensor_f32("w", &[3, 2], &values)
        .tensor_f32("scalar", &[], &[7.0])
        .tensor_f32("empty", &[0, 4], &[])
        .to_bytes();
    let f = parse(&bytes).unwrap();
    assert_eq!(f.version, 3);
    assert_eq!(f.alignment, 32);
    assert_eq!(
        f.get_array("a.empty").unwrap().elem_type(),
        MetaType::String
    );
    assert_eq!(f.get_array("a.nested").unwrap().len(), 2);
    let w = f.tensor("w").unwrap();
    assert_eq!(f.dequantize(w).unwrap(), values);
    let t = f.to_ir_tensor(w).unwrap();
    assert_eq!((t.shape(), t.is_mapped()), (&[2usize, 3][..], true));
    let s = f.tensor("scalar").unwrap();
    assert_eq!(f.to_ir_tensor(s).unwrap().shape(), &[] as &[usize]);
    assert_eq!(f.dequantize(s).unwrap(), vec![7.0]);
    let e = f.tensor("empty").unwrap();
    assert_eq!(e.byte_len, 0);
    assert_eq!(f.to_ir_tensor(e).unwrap().shape(), &[4, 0]);
}

#[test]
fn version_2_is_read() {
    let bytes = GgufWriter::new()
        .version(2)
        .tensor_f32("w", &[2], &[1.0, 2.0])
        .to_bytes();
    let f = parse(&bytes).unwrap();
    assert_eq!(f.version, 2);
    assert_eq!(f.dequantize(&f.tensors[0]).unwrap(), vec![1.0, 2.0]);
}

#[test]
fn truncated_file_at_every_header_byte_and_in_the_data() {
    let full = golden_bytes();
    let data_offset = parse(&full).unwrap().data_offset as usize;
    for len in 0..data_offset {
        let (e, msg) = err(&full[..len]);
        // Cut inside the header proper: truncated, or a count that cannot fit in what is
        // left; cut in the padding before the data: the first tensor lies outside the file.
        let ok = match e {
            GgufError::Truncated { .. } => true,
            GgufError::Malformed { .. } => msg.contains("claims"),
            GgufError::Tensor { .. } => len >= data_offset - 64 && msg.contains("outside the file"),
            _ => false,
        };
        assert!(ok, "cut at {len}: {msg}");
    }
    let (e, msg) = err(&full[..0]);
    assert!(
        matches!(e, GgufError::Truncated { .. }) && msg.contains("magic"),
        "{msg}"
    );
    let (_, msg) = err(&full[..30]);
    assert!(
        msg.contains("metadata count: claims 36 metadata entries")
            && msg.contains("only 6 bytes remain"),
        "{msg}"
    );
    let (e, msg) = err(&full[..600]);
    assert!(
        matches!(e, GgufError::Truncated { .. })
            && msg.contains("length of key of metadata entry 19"),
        "{msg}"
    );
    // Cut in the data of the last tensor.
    let f = parse(&full).unwrap();
    let last = f.tensors.last().unwrap();
    let end = (f.data_offset + last.offset + last.byte_len) as usize;
    assert!(
        parse(&full[..end]).is_ok(),
        "the padding after the last tensor is optional"
    );
    let (e, msg) = err(&full[..end - 1]);
    assert!(matches!(e, GgufError::Tensor { .. }), "{msg}");
    assert!(
        msg.contains("iq4_nl.unsupported") && msg.contains("outside the file"),
        "{msg}"
    );
}

#[test]
fn wrong_magic() {
    let mut b = golden_bytes();
    b[..4].copy_from_slice(b"GGML");
    let (e, msg) = err(&b);
    assert!(matches!(e, GgufError::BadMagic { .. }));
    assert!(
        msg.contains("not a GGUF file") && msg.contains("GGML"),
        "{msg}"
    );
    let (_, msg) = err(b"\x00\xff\x10G and more bytes");
    assert!(msg.contains("\\x00\\xff\\x10G"), "{msg}");
}

#[test]
fn unsupported_versions() {
    for (version, note) in [
        (1u32, "version 1"),
        (4, ""),
        (0x0300_0000, "big-endian"),
        (u32::MAX, ""),
    ] {
        let mut b = golden_bytes();
        b[4..8].copy_from_slice(&version.to_le_bytes());
        let (e, msg) = err(&b);
        assert!(
            matches!(e, GgufError::UnsupportedVersion { version: v, .. } if v == version),
            "{msg}"
        );
        assert!(
            msg.contains(&format!("unsupported GGUF version {version}")) && msg.contains(note),
            "{msg}"
        );
    }
}

#[test]
fn unknown_quantization_type() {
    for id in [4u32, 31, 99, u32::MAX] {
        let bytes = GgufWriter::new()
            .tensor_raw("blk.3.ffn_up.weight", &[32], id, vec![0; 32])
            .to_bytes();
        let (e, msg) = err(&bytes);
        assert!(
            matches!(e, GgufError::UnknownType { type_id, .. } if type_id == id),
            "{msg}"
        );
        assert!(
            msg.contains("`blk.3.ffn_up.weight`")
                && msg.contains(&format!("unknown ggml type id {id}")),
            "{msg}"
        );
    }
}

#[test]
fn known_types_without_a_kernel() {
    for ty in [
        GgmlType::Q8_1,
        GgmlType::Q8_K,
        GgmlType::IQ2_XXS,
        GgmlType::TQ2_0,
        GgmlType::MXFP4,
        GgmlType::I32,
        GgmlType::F64,
    ] {
        let bs = ty.block_size() as u64;
        let bytes = GgufWriter::new()
            .tensor("t", &[bs, 2], ty, vec![0; 2 * ty.type_size()])
            .to_bytes();
        let f = parse(&bytes).unwrap();
        let e = f.dequantize(&f.tensors[0]).unwrap_err();
        assert!(
            matches!(e, GgufError::UnsupportedType { ty: t, .. } if t == ty),
            "{e}"
        );
        assert!(
            e.to_string().contains(&format!("{ty} (id {})", ty.id())),
            "{e}"
        );
    }
}

#[test]
fn tensor_data_outside_the_file() {
    // Offset far past the end.
    let (e, msg) = err(&one_tensor_file(&[4], 0, 1 << 40, 16));
    assert!(matches!(e, GgufError::Tensor { .. }), "{msg}");
    assert!(
        msg.contains("`blk.0.w`") && msg.contains("outside the file"),
        "{msg}"
    );
    // Offset + length overflows u64.
    let (_, msg) = err(&one_tensor_file(&[4], 0, !31u64, 16));
    assert!(msg.contains("outside the file"), "{msg}");
    // Data one byte short.
    let (_, msg) = err(&one_tensor_file(&[4], 0, 0, 15));
    assert!(
        msg.contains("data of 16 bytes") && msg.contains("outside the file"),
        "{msg}"
    );
    // Large dims, small file.
    let (_, msg) = err(&one_tensor_file(&[1 << 40, 1 << 10], 0, 0, 16));
    assert!(msg.contains("outside the file"), "{msg}");
    // Exactly fitting is fine.
    assert!(parse(&one_tensor_file(&[4], 0, 0, 16)).is_ok());
}

#[test]
fn misaligned_offset_and_bad_row_length() {
    let (_, msg) = err(&one_tensor_file(&[4], 0, 8, 64));
    assert!(
        msg.contains("`blk.0.w`") && msg.contains("not a multiple of the alignment 32"),
        "{msg}"
    );
    let (_, msg) = err(&one_tensor_file(&[33, 2], GgmlType::Q4_0.id(), 0, 64));
    assert!(
        msg.contains("row length 33") && msg.contains("Q4_0 block size 32"),
        "{msg}"
    );
    let (_, msg) = err(&one_tensor_file(&[1, 1, 1, 1, 1], 0, 0, 4));
    assert!(msg.contains("5 dimensions"), "{msg}");
}

#[test]
fn absurd_counts_and_sizes() {
    // 2^60 tensors.
    let (e, msg) = err(&header(3, 1 << 60, 0));
    assert!(matches!(e, GgufError::Malformed { .. }), "{msg}");
    assert!(
        msg.contains("tensor count") && msg.contains("claims 1152921504606846976 tensor infos"),
        "{msg}"
    );
    // 2^60 metadata entries.
    let (_, msg) = err(&header(3, 0, 1 << 60));
    assert!(
        msg.contains("metadata count") && msg.contains("claims 1152921504606846976"),
        "{msg}"
    );
    // u64::MAX of each (the byte product overflows).
    let (_, msg) = err(&header(3, u64::MAX, u64::MAX));
    assert!(msg.contains("claims 18446744073709551615"), "{msg}");

    // A key length of 2^62.
    let mut b = header(3, 0, 1);
    b.extend_from_slice(&(1u64 << 62).to_le_bytes());
    b.extend_from_slice(b"general.name and some more bytes");
    let (e, msg) = err(&b);
    assert!(
        matches!(e, GgufError::Truncated { need, .. } if need == 1 << 62),
        "{msg}"
    );
    assert!(msg.contains("key of metadata entry 0"), "{msg}");

    // A string value length of 2^62.
    let mut b = header(3, 0, 1);
    encode_str("general.name", &mut b);
    b.extend_from_slice(&MetaType::String.id().to_le_bytes());
    b.extend_from_slice(&(1u64 << 62).to_le_bytes());
    b.extend_from_slice(b"abc");
    let (_, msg) = err(&b);
    assert!(
        msg.contains("metadata key `general.name`") && msg.contains("4611686018427387904 bytes"),
        "{msg}"
    );

    // Array counts of 2^62 for several element types.
    for ty in [
        MetaType::U8,
        MetaType::U64,
        MetaType::String,
        MetaType::Array,
        MetaType::Bool,
    ] {
        let mut b = header(3, 0, 1);
        encode_str("tokenizer.ggml.tokens", &mut b);
        b.extend_from_slice(&MetaType::Array.id().to_le_bytes());
        b.extend_from_slice(&ty.id().to_le_bytes());
        b.extend_from_slice(&(1u64 << 62).to_le_bytes());
        b.extend_from_slice(&[0; 64]);
        let (_, msg) = err(&b);
        assert!(
            msg.contains("`tokenizer.ggml.tokens`") && msg.contains("claims 4611686018427387904"),
            "{ty}: {msg}"
        );
    }

    // A tensor name length of 2^62.
    let mut b = header(3, 1, 0);
    b.extend_from_slice(&(1u64 << 62).to_le_bytes());
    b.extend_from_slice(&[0; 32]);
    let (_, msg) = err(&b);
    assert!(
        msg.contains("truncated") && msg.contains("name of tensor 0"),
        "{msg}"
    );

    // Dims whose product overflows u64.
    let (e, msg) = err(&one_tensor_file(&[1 << 32, 1 << 32, 2], 0, 0, 16));
    assert!(matches!(e, GgufError::Tensor { .. }), "{msg}");
    assert!(
        msg.contains("`blk.0.w`") && msg.contains("more elements than fit in 64 bits"),
        "{msg}"
    );
    // Elements fit, bytes do not.
    let (_, msg) = err(&one_tensor_file(&[1 << 32, 1 << 31], 0, 0, 16));
    assert!(msg.contains("more bytes than fit in 64 bits"), "{msg}");
}

#[test]
fn malformed_metadata() {
    let kv_file = |key: &str, v: &MetaValue| {
        let mut b = header(3, 0, 1);
        push_kv(&mut b, key, v);
        b
    };
    // Unknown value type.
    let mut b = header(3, 0, 1);
    encode_str("x.y", &mut b);
    b.extend_from_slice(&13u32.to_le_bytes());
    b.extend_from_slice(&[0; 8]);
    let (_, msg) = err(&b);
    assert!(
        msg.contains("`x.y`") && msg.contains("unknown value type id 13"),
        "{msg}"
    );
    // Bool that is neither 0 nor 1.
    let mut b = kv_file("x.flag", &MetaValue::Bool(true));
    *b.last_mut().unwrap() = 2;
    let (_, msg) = err(&b);
    assert!(
        msg.contains("`x.flag`") && msg.contains("is 2, not 0 or 1"),
        "{msg}"
    );
    // Invalid UTF-8 in a string value and in a key.
    let mut b = kv_file("x.s", &MetaValue::String("ab".into()));
    *b.last_mut().unwrap() = 0xff;
    let (_, msg) = err(&b);
    assert!(
        msg.contains("`x.s`") && msg.contains("not valid UTF-8"),
        "{msg}"
    );
    let mut b = kv_file("x\u{e9}", &MetaValue::U8(1));
    let pos = b.iter().position(|&c| c == 0xc3).unwrap();
    b[pos] = 0xff;
    let (_, msg) = err(&b);
    assert!(
        msg.contains("key of metadata entry 0") && msg.contains("not valid UTF-8"),
        "{msg}"
    );
    // Duplicate key.
    let mut b = header(3, 0, 2);
    push_kv(&mut b, "x.k", &MetaValue::U8(1));
    push_kv(&mut b, "x.k", &MetaValue::U8(2));
    let (_, msg) = err(&b);
    assert!(
        msg.contains("`x.k`") && msg.contains("appears twice"),
        "{msg}"
    );
    // Bad alignments.
    for v in [
        MetaValue::U32(0),
        MetaValue::U32(48),
        MetaValue::U64(32),
        MetaValue::String("32".into()),
    ] {
        let (_, msg) = err(&kv_file("general.alignment", &v));
        assert!(
            msg.contains("`general.alignment`") && msg.contains("power of two"),
            "{msg}"
        );
    }
    // Arrays nested too deep.
    let mut a = MetaArray::U8(vec![1]);
    for _ in 0..20 {
        a = MetaArray::Array(vec![a]);
    }
    let (_, msg) = err(&kv_file("x.deep", &MetaValue::Array(a)));
    assert!(
        msg.contains("`x.deep`") && msg.contains("nested more than 16 deep"),
        "{msg}"
    );
    // Unknown array element type.
    let mut b = header(3, 0, 1);
    encode_str("x.arr", &mut b);
    b.extend_from_slice(&MetaType::Array.id().to_le_bytes());
    b.extend_from_slice(&77u32.to_le_bytes());
    b.extend_from_slice(&1u64.to_le_bytes());
    let (_, msg) = err(&b);
    assert!(
        msg.contains("`x.arr`") && msg.contains("unknown array element type id 77"),
        "{msg}"
    );
}

#[test]
fn duplicate_tensor_names() {
    let bytes = GgufWriter::new()
        .tensor_f32("w", &[1], &[1.0])
        .tensor_f32("w", &[1], &[2.0])
        .to_bytes();
    let (_, msg) = err(&bytes);
    assert!(
        msg.contains("`w`") && msg.contains("appears twice"),
        "{msg}"
    );
}

#[test]
fn forged_tensor_infos_give_errors() {
    let bytes = GgufWriter::new()
        .tensor_f32("w", &[4], &[1.0, 2.0, 3.0, 4.0])
        .to_bytes();
    let f = parse(&bytes).unwrap();
    let good = f.tensors[0].clone();
    let forged = [
        TensorInfo {
            byte_len: 1 << 40,
            ..good.clone()
        },
        TensorInfo {
            dims: vec![1 << 20],
            byte_len: 4 << 20,
            ..good.clone()
        },
        TensorInfo {
            offset: 1 << 50,
            ..good.clone()
        },
        TensorInfo {
            offset: 3,
            ..good.clone()
        },
        TensorInfo {
            dims: vec![u64::MAX, 2],
            ..good.clone()
        },
        TensorInfo {
            ggml_type: GgmlType::Q8_0,
            ..good.clone()
        },
    ];
    for t in &forged {
        assert!(f.tensor_data(t).is_err(), "{t:?}");
        assert!(f.dequantize(t).is_err(), "{t:?}");
        assert!(f.to_ir_tensor(t).is_err(), "{t:?}");
    }
    assert_eq!(f.dequantize(&good).unwrap(), vec![1.0, 2.0, 3.0, 4.0]);
}

#[test]
fn missing_file_names_the_path() {
    let e = GgufFile::open("/nonexistent/dir/model.gguf").unwrap_err();
    assert!(matches!(e, GgufError::Io { .. }));
    assert!(
        e.to_string().starts_with("/nonexistent/dir/model.gguf: "),
        "{e}"
    );
}

#[test]
fn dequantize_into_checks_lengths() {
    let mut out = vec![0f32; 32];
    assert!(jetc_gguf::quant::dequantize_into(GgmlType::Q4_0, &[0; 17], &mut out).is_err());
    assert!(jetc_gguf::quant::dequantize_into(GgmlType::Q4_0, &[0; 36], &mut out).is_err());
    assert!(jetc_gguf::quant::dequantize_into(GgmlType::IQ4_NL, &[0; 18], &mut out).is_err());
    assert!(jetc_gguf::quant::dequantize_into(GgmlType::Q4_0, &[0; 18], &mut out).is_ok());
}

#[test]
fn parallel_path_matches_serial() {
    // Enough blocks to take the rayon path; compare with block-by-block de-quantization.
    let n_blocks = 3 * 4096 + 7;
    let mut data = vec![0u8; n_blocks * 210];
    let mut x = 0x2545F4914F6CDD1Du64;
    for b in data.iter_mut() {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        *b = x as u8;
    }
    for blk in data.chunks_exact_mut(210) {
        blk[209] &= 0x3b; // keep the f16 scale finite
    }
    let mut whole = vec![0f32; n_blocks * 256];
    jetc_gguf::quant::dequantize_into(GgmlType::Q6_K, &data, &mut whole).unwrap();
    for (i, blk) in data.chunks_exact(210).enumerate() {
        let mut one = vec![0f32; 256];
        jetc_gguf::quant::dequantize_into(GgmlType::Q6_K, blk, &mut one).unwrap();
        assert_eq!(one, whole[i * 256..(i + 1) * 256]);
    }
}
