//! A streaming safetensors writer: tensors are written one after the other, each converted
//! to f32 (and transposed where the target layout wants it) while it is written, so exporting
//! a multi-gigabyte model holds one block of one tensor in memory instead of a second copy of
//! every weight. The file is standard safetensors (8-byte header length, JSON header with
//! `data_offsets`, 8-byte aligned, then the data), read back by the `safetensors` crate.
use std::collections::BTreeMap;
use std::io::{BufWriter, Write};
use std::path::Path;

use jetc_ir::{DType, Tensor};

/// One output tensor: a source weight, written as f32, transposed from [in, out] to
/// [out, in] when `transpose` is set.
#[derive(Clone, Debug)]
pub struct Entry {
    pub source: Tensor,
    pub transpose: bool,
}

impl Entry {
    fn shape(&self) -> Vec<usize> {
        let s = self.source.shape();
        if self.transpose && s.len() == 2 {
            vec![s[1], s[0]]
        } else {
            s.to_vec()
        }
    }
}

/// Output rows produced per pass of a transpose (each source row is read once per block).
const BLOCK: usize = 64;

/// Writes `entries` (sorted by name) as a safetensors file at `path`.
pub fn write(path: &Path, entries: &BTreeMap<String, Entry>) -> Result<(), String> {
    let at = |e: std::io::Error| format!("{}: {e}", path.display());
    let mut header = serde_json::Map::new();
    let mut offset = 0usize;
    for (name, e) in entries {
        if e.transpose && e.source.shape().len() != 2 {
            return Err(format!("{name}: only 2-D weights are transposed, got {:?}", e.source.shape()));
        }
        let shape = e.shape();
        let len = shape.iter().product::<usize>() * 4;
        header.insert(
            name.clone(),
            serde_json::json!({ "dtype": "F32", "shape": shape, "data_offsets": [offset, offset + len] }),
        );
        offset += len;
    }
    let mut text = serde_json::to_string(&header).map_err(|e| e.to_string())?.into_bytes();
    while text.len() % 8 != 0 {
        text.push(b' ');
    }
    let file = std::fs::File::create(path).map_err(at)?;
    let mut w = BufWriter::with_capacity(1 << 20, file);
    w.write_all(&(text.len() as u64).to_le_bytes()).map_err(at)?;
    w.write_all(&text).map_err(at)?;
    for (name, e) in entries {
        write_tensor(&mut w, e).map_err(|m| format!("{}: {name}: {m}", path.display()))?;
    }
    w.flush().map_err(at)?;
    Ok(())
}

fn write_tensor(w: &mut impl Write, e: &Entry) -> Result<(), String> {
    let io = |e: std::io::Error| e.to_string();
    let t = &e.source;
    // f32 sources are read in place (memory-mapped weights stay on disk); others converted.
    let converted;
    let values: &[u8] = if t.dtype() == DType::F32 {
        t.bytes()
    } else {
        converted = t.to_f32_vec().iter().flat_map(|v| v.to_le_bytes()).collect::<Vec<u8>>();
        &converted
    };
    if !e.transpose {
        return w.write_all(values).map_err(io);
    }
    let (rows, cols) = (t.shape()[0], t.shape()[1]);
    let get = |i: usize| -> [u8; 4] { [values[4 * i], values[4 * i + 1], values[4 * i + 2], values[4 * i + 3]] };
    let mut block = vec![0u8; BLOCK * rows * 4];
    for c0 in (0..cols).step_by(BLOCK) {
        let n = BLOCK.min(cols - c0);
        for r in 0..rows {
            for j in 0..n {
                let dst = (j * rows + r) * 4;
                block[dst..dst + 4].copy_from_slice(&get(r * cols + c0 + j));
            }
        }
        w.write_all(&block[..n * rows * 4]).map_err(io)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_through_the_safetensors_crate() {
        let a: Vec<f32> = (0..6 * 130).map(|i| i as f32 * 0.5 - 7.0).collect();
        let b: Vec<f32> = vec![1.0, -2.0, 3.5];
        let mut entries = BTreeMap::new();
        entries.insert("w".to_string(), Entry { source: Tensor::from_f32(vec![6, 130], &a).unwrap(), transpose: true });
        let half: Vec<half::f16> = b.iter().map(|&v| half::f16::from_f32(v)).collect();
        let hb: Vec<u8> = half.iter().flat_map(|v| v.to_le_bytes()).collect();
        entries.insert("v".to_string(), Entry { source: Tensor::from_bytes(DType::F16, vec![3], hb).unwrap(), transpose: false });
        let path = std::env::temp_dir().join(format!("jetc-st-{}.safetensors", std::process::id()));
        write(&path, &entries).unwrap();
        let bytes = std::fs::read(&path).unwrap();
        let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
        let w = st.tensor("w").unwrap();
        assert_eq!(w.shape(), &[130, 6]);
        let got: Vec<f32> = w.data().chunks(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect();
        for r in 0..6 {
            for c in 0..130 {
                assert_eq!(got[c * 6 + r], a[r * 130 + c]);
            }
        }
        let v = st.tensor("v").unwrap();
        let got: Vec<f32> = v.data().chunks(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect();
        assert_eq!(got, b);
        std::fs::remove_file(&path).ok();
    }
}
