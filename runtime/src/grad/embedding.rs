//! VJP of `Embedding`: the table's gradient is a scatter-add of the cotangent rows at the
//! token ids (repeated ids accumulate). Ids are integers and get none.
use ndarray::{ArrayD, IxDyn};

use super::{Bwd, R};

pub(crate) fn vjp(c: &Bwd) -> R<Vec<Option<ArrayD<f32>>>> {
    let table = c.xf(0, "table")?;
    let ids = c.x(1).and_then(|v| v.as_i64()).ok_or("ids must be integers")?;
    let dy = c.req_dy(0)?;
    if table.ndim() != 2 {
        return Err(format!("table must be 2-D, got {:?}", table.shape()));
    }
    let (v, d) = (table.shape()[0], table.shape()[1]);
    if dy.len() != ids.len() * d {
        return Err(format!("cotangent {:?} does not fit {} ids of width {d}", dy.shape(), ids.len()));
    }
    let mut g = vec![0f32; v * d];
    for (row, (&id, grow)) in ids.iter().zip(dy.iter().copied().collect::<Vec<_>>().chunks(d.max(1))).enumerate() {
        let r = if id < 0 { id + v as i64 } else { id };
        if r < 0 || r >= v as i64 {
            return Err(format!("token id {id} (position {row}) is outside the vocabulary of {v}"));
        }
        for (acc, &x) in g[r as usize * d..(r as usize + 1) * d].iter_mut().zip(grow) {
            *acc += x;
        }
    }
    Ok(vec![Some(ArrayD::from_shape_vec(IxDyn(&[v, d]), g).map_err(|e| e.to_string())?), None])
}
