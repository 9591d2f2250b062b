//! Reading and writing `.npz` archives (numpy's zip of `.npy` files), the exchange format of
//! `jetc run`. Supports little-endian f2/f4/f8, i1/i2/i4/i8, u1 and b1 arrays in C or
//! Fortran order; writes f32, i64 and bool (and keeps other int widths' declared dtype).
use std::io::{Read, Write};
use std::path::Path;

use jetc_ir::DType;
use ndarray::{ArrayD, IxDyn, ShapeBuilder};

use crate::error::{Result, RuntimeError};
use crate::value::{Data, Value};

fn npz_err(path: &Path, msg: impl Into<String>) -> RuntimeError {
    RuntimeError::Npz { path: path.display().to_string(), msg: msg.into() }
}

/// Reads every array of an npz file, in archive order.
pub fn read_npz(path: &Path) -> Result<Vec<(String, Value)>> {
    let file = std::fs::File::open(path).map_err(|e| npz_err(path, e.to_string()))?;
    read_archive(file, path)
}

/// Reads every array of an npz archive held in memory; `path` only names it in errors.
pub fn read_npz_bytes(bytes: &[u8], path: &Path) -> Result<Vec<(String, Value)>> {
    read_archive(std::io::Cursor::new(bytes), path)
}

fn read_archive<R: Read + std::io::Seek>(reader: R, path: &Path) -> Result<Vec<(String, Value)>> {
    let mut zip = zip::ZipArchive::new(reader).map_err(|e| npz_err(path, format!("not a zip archive: {e}")))?;
    let mut out = Vec::with_capacity(zip.len());
    for i in 0..zip.len() {
        let mut entry = zip.by_index(i).map_err(|e| npz_err(path, e.to_string()))?;
        let name = entry.name().trim_end_matches(".npy").to_string();
        // The declared size is only a hint: a lying header must not make a tiny file
        // allocate much up front (the read itself grows the buffer as data arrives).
        let mut bytes = Vec::with_capacity(usize::try_from(entry.size()).unwrap_or(usize::MAX).min(64 << 20));
        entry.read_to_end(&mut bytes).map_err(|e| npz_err(path, format!("array `{name}`: {e}")))?;
        let v = parse_npy(&bytes).map_err(|m| npz_err(path, format!("array `{name}`: {m}")))?;
        out.push((name, v));
    }
    Ok(out)
}

fn parse_npy(b: &[u8]) -> std::result::Result<Value, String> {
    if b.len() < 10 || &b[..6] != b"\x93NUMPY" {
        return Err("not a .npy array (bad magic)".into());
    }
    let (header_len, start) = match b[6] {
        1 => (u16::from_le_bytes([b[8], b[9]]) as usize, 10usize),
        2 | 3 => {
            if b.len() < 12 {
                return Err("truncated header".into());
            }
            (u32::from_le_bytes([b[8], b[9], b[10], b[11]]) as usize, 12)
        }
        v => return Err(format!("unsupported .npy version {v}")),
    };
    let end = start.checked_add(header_len).filter(|&e| e <= b.len()).ok_or("truncated header")?;
    let header = std::str::from_utf8(&b[start..end]).map_err(|_| "header is not text")?;
    let descr = dict_value(header, "descr").ok_or("header has no descr")?;
    let descr = descr.trim_matches(|c| c == '\'' || c == '"');
    let fortran = dict_value(header, "fortran_order").map(|v| v.starts_with("True")).unwrap_or(false);
    let shape_text = dict_value(header, "shape").ok_or("header has no shape")?;
    let shape: Vec<usize> = shape_text
        .trim_matches(|c| c == '(' || c == ')')
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|s| s.parse::<usize>().map_err(|_| format!("bad shape {shape_text}")))
        .collect::<std::result::Result<_, _>>()?;
    let numel = shape.iter().try_fold(1usize, |a, &d| a.checked_mul(d)).ok_or("shape overflows")?;
    let data = &b[end..];
    let (dtype, size) = match descr {
        "<f4" => (DType::F32, 4),
        "<f8" => (DType::F64, 8),
        "<f2" => (DType::F16, 2),
        "<i8" => (DType::I64, 8),
        "<i4" => (DType::I32, 4),
        "<i2" => (DType::I16, 2),
        "|i1" => (DType::I8, 1),
        "|u1" => (DType::U8, 1),
        "|b1" => (DType::Bool, 1),
        other => return Err(format!("unsupported dtype `{other}`")),
    };
    let need = numel.checked_mul(size).ok_or("size overflows")?;
    if data.len() < need {
        return Err(format!("data has {} bytes, shape {shape:?} needs {need}", data.len()));
    }
    let t = jetc_ir::Tensor::from_bytes(dtype, vec![numel], data[..need].to_vec()).map_err(|e| e.to_string())?;
    let flat = Value::from_tensor(&t);
    let dims = IxDyn(&shape);
    let reshape = |d: Data| -> std::result::Result<Data, String> {
        fn go<T: Clone>(a: ArrayD<T>, dims: IxDyn, fortran: bool) -> std::result::Result<ArrayD<T>, String> {
            let v = a.into_raw_vec_and_offset().0;
            let arr = if fortran {
                ArrayD::from_shape_vec(dims.f(), v).map(|a| a.as_standard_layout().into_owned())
            } else {
                ArrayD::from_shape_vec(dims, v)
            };
            arr.map_err(|e| e.to_string())
        }
        Ok(match d {
            Data::F(a) => Data::F(go(a, dims.clone(), fortran)?),
            Data::I(a) => Data::I(go(a, dims.clone(), fortran)?),
            Data::B(a) => Data::B(go(a, dims.clone(), fortran)?),
            Data::Q(_) => return Err("an npz array is never a stored-precision weight".into()),
        })
    };
    Ok(Value { dtype, data: reshape(flat.data)? })
}

/// The text after `'key':` in a numpy header dict, up to the next top-level comma.
fn dict_value<'a>(header: &'a str, key: &str) -> Option<&'a str> {
    let pat = format!("'{key}':");
    let at = header.find(&pat)? + pat.len();
    let rest = header[at..].trim_start();
    let mut depth = 0i32;
    for (i, c) in rest.char_indices() {
        match c {
            '(' | '[' => depth += 1,
            ')' | ']' => depth -= 1,
            ',' | '}' if depth == 0 => return Some(rest[..i].trim()),
            _ => {}
        }
    }
    Some(rest.trim())
}

fn npy_bytes(v: &Value) -> std::result::Result<Vec<u8>, String> {
    let t = v.to_tensor().map_err(|e| e.to_string())?;
    let descr = match t.dtype() {
        DType::F32 => "<f4",
        DType::F64 => "<f8",
        DType::F16 => "<f2",
        DType::BF16 => return Err("numpy has no bfloat16".into()),
        DType::I64 => "<i8",
        DType::I32 => "<i4",
        DType::I16 => "<i2",
        DType::I8 => "|i1",
        DType::U8 => "|u1",
        DType::Bool => "|b1",
    };
    let shape = v.shape();
    let shape_text = match shape.len() {
        1 => format!("({},)", shape[0]),
        _ => format!("({})", shape.iter().map(|d| d.to_string()).collect::<Vec<_>>().join(", ")),
    };
    let mut header = format!("{{'descr': '{descr}', 'fortran_order': False, 'shape': {shape_text}, }}");
    // Pad so that the data starts on a 64-byte boundary, header ending in '\n'.
    let total = 10 + header.len() + 1;
    header.push_str(&" ".repeat(total.div_ceil(64) * 64 - total));
    header.push('\n');
    let mut out = Vec::with_capacity(10 + header.len() + t.bytes().len());
    out.extend_from_slice(b"\x93NUMPY\x01\x00");
    out.extend_from_slice(&(header.len() as u16).to_le_bytes());
    out.extend_from_slice(header.as_bytes());
    out.extend_from_slice(t.bytes());
    Ok(out)
}

/// Writes arrays to an npz file (stored, uncompressed), in the given order.
pub fn write_npz(path: &Path, arrays: &[(String, Value)]) -> Result<()> {
    let file = std::fs::File::create(path).map_err(|e| npz_err(path, e.to_string()))?;
    let mut zip = zip::ZipWriter::new(file);
    let opts = zip::write::SimpleFileOptions::default()
        .compression_method(zip::CompressionMethod::Stored)
        .large_file(true);
    for (name, v) in arrays {
        let bytes = npy_bytes(v).map_err(|m| npz_err(path, format!("array `{name}`: {m}")))?;
        zip.start_file(format!("{name}.npy"), opts).map_err(|e| npz_err(path, e.to_string()))?;
        zip.write_all(&bytes).map_err(|e| npz_err(path, e.to_string()))?;
    }
    zip.finish().map_err(|e| npz_err(path, e.to_string()))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_every_written_dtype() {
        let dir = std::env::temp_dir().join(format!("jetc-npz-{}", std::process::id()));
        std::fs::create_dir_all(&dir).ok();
        let path = dir.join("a.npz");
        let f = Value::f32(ArrayD::from_shape_vec(IxDyn(&[2, 3]), vec![1.0, -2.5, 3.0, 0.0, 1e-7, 7.0]).unwrap_or_default());
        let i = Value::i64(ArrayD::from_shape_vec(IxDyn(&[3]), vec![-1, 0, 1 << 40]).unwrap_or_default());
        let b = Value::bool(ArrayD::from_shape_vec(IxDyn(&[1, 2]), vec![true, false]).unwrap_or_default());
        let arrays = vec![("x".to_string(), f), ("ids".to_string(), i), ("m".to_string(), b)];
        write_npz(&path, &arrays).expect("write");
        let back = read_npz(&path).expect("read");
        assert_eq!(back, arrays);
        let bytes = std::fs::read(&path).expect("read bytes");
        assert_eq!(read_npz_bytes(&bytes, &path).expect("read from memory"), arrays);
        std::fs::remove_dir_all(&dir).ok();
    }

    #[test]
    fn rejects_garbage() {
        let e = read_npz_bytes(b"PK\x03\x04 not a zip", Path::new("in.npz")).err().map(|e| e.to_string());
        assert!(e.is_some_and(|m| m.contains("in.npz") && m.contains("not a zip archive")));
        assert!(parse_npy(b"not numpy at all").is_err());
        let mut short = b"\x93NUMPY\x01\x00".to_vec();
        short.extend_from_slice(&200u16.to_le_bytes());
        short.extend_from_slice(b"{'descr': '<f4'");
        assert!(parse_npy(&short).is_err());
    }
}
