//! Inputs of a decoder's prefill graph for a batch of token windows: `input_ids`, positions
//! `0..T` per row, an all-ones `attention_mask`, and empty (zero-length) caches for every
//! `past*` input, so any exported decoder trains on its prefill form.
use std::collections::HashMap;

use jetc_ir::{DType, Graph, Outlet};
use jetc_runtime::{Data, Value};
use ndarray::{ArrayD, IxDyn};

use crate::error::{Result, TrainError};

fn int_or_float(dtype: DType, shape: &[usize], v: Vec<i64>) -> Result<Value> {
    let bad = |e: ndarray::ShapeError| TrainError::Other(e.to_string());
    Ok(if dtype.is_float() {
        Value { dtype, data: Data::F(ArrayD::from_shape_vec(IxDyn(shape), v.into_iter().map(|x| x as f32).collect()).map_err(bad)?) }
    } else if dtype == DType::Bool {
        Value { dtype, data: Data::B(ArrayD::from_shape_vec(IxDyn(shape), v.into_iter().map(|x| x != 0).collect()).map_err(bad)?) }
    } else {
        Value { dtype, data: Data::I(ArrayD::from_shape_vec(IxDyn(shape), v).map_err(bad)?) }
    })
}

/// The feed for `ids` `[B, T]` (row-major).
pub fn prefill_inputs(g: &Graph, ids: &[i64], batch: usize, seq: usize) -> Result<HashMap<String, Value>> {
    prefill_inputs_except(g, ids, batch, seq, &|_| false)
}

/// The feed for `ids`, leaving out the inputs that `skip` names (fed by the caller: a
/// training graph's targets).
pub fn prefill_inputs_except(g: &Graph, ids: &[i64], batch: usize, seq: usize, skip: &dyn Fn(&str) -> bool) -> Result<HashMap<String, Value>> {
    if ids.len() != batch * seq {
        return Err(TrainError::Other(format!("{} token ids for a batch of {batch} x {seq}", ids.len())));
    }
    let mut feed = HashMap::new();
    for &id in &g.inputs {
        let o = Outlet::new(id, 0);
        let name = g.value_name(o).to_string();
        if skip(&name) {
            continue;
        }
        let fact = g.fact(o)?;
        let v = match name.as_str() {
            "input_ids" => int_or_float(fact.dtype, &[batch, seq], ids.to_vec())?,
            "position_ids" => int_or_float(fact.dtype, &[batch, seq], (0..batch).flat_map(|_| 0..seq as i64).collect())?,
            "attention_mask" => int_or_float(fact.dtype, &[batch, seq], vec![1; batch * seq])?,
            n if n.starts_with("past") => {
                let shape = fact.shape.as_ref().ok_or_else(|| TrainError::Other(format!("input `{n}` has no declared rank")))?;
                let dims: Vec<usize> = shape
                    .iter()
                    .enumerate()
                    .map(|(i, d)| match d.as_known() {
                        Some(k) => usize::try_from(k).unwrap_or(0),
                        None if i == 0 => batch,
                        None => 0,
                    })
                    .collect();
                let n_el = dims.iter().product();
                Value { dtype: fact.dtype, data: Data::F(ArrayD::from_shape_vec(IxDyn(&dims), vec![0f32; n_el]).map_err(|e| TrainError::Other(e.to_string()))?) }
            }
            other => {
                return Err(TrainError::Other(format!(
                    "input `{other}` is not one training knows how to feed (input_ids, position_ids, attention_mask, past* caches)"
                )))
            }
        };
        feed.insert(name, v);
    }
    Ok(feed)
}
