//! JetBlock's dynamic convolution as `lower` writes it in standard ONNX ops, back to
//! `DynamicConv`, so a converted model read back from ONNX is summarized (conv cache) and
//! fused like one built in memory. The pattern, for width W:
//! `full = Concat(Transpose(past, [0,2,1]), u, axis=1)` (or `Pad(u)` with W leading zeros);
//! tap w: `Slice(full, 1+w, ..) * Squeeze(Slice(Reshape(ker, [0,0,-1,W]), w, w+1, -1))`;
//! `v = silu(sum of taps)`; `present = Transpose(Slice(full, -W, ..), [0,2,1])`.
//!
//! A static short convolution (GDN's, DeltaNet's, Mamba2's) is lowered to the standard
//! `CausalConvWithState` instead: `v = Transpose(CausalConvWithState(Transpose(u),
//! Reshape(weight, [-1,1,W]) | weight [C,1,W], -, Slice(past, 1..) | -, activation=silu))`,
//! the present cache as above. [`raise_standard`] reads that back to a `DynamicConv` whose
//! kernels are the weight broadcast over [B, T], as linearize builds it.
use jetc_ir::{Attr, DynamicConvSpec, Graph, Node, NodeId, OnnxOp, Op, Outlet, OutputInfo, Patch, PatchOutlet, Result, Tensor};

use crate::pattern::{const_of, input, onnx_producer};

fn ints(g: &Graph, o: Option<Outlet>) -> Option<Vec<i64>> {
    Some(const_of(g, o?)?.to_i64_vec())
}

fn perm_021(n: &Node) -> bool {
    matches!(&n.op, Op::Onnx(o) if o.op_type == "Transpose" && o.ints("perm") == Some(&[0, 2, 1][..]))
}

/// `(start, end)` of a Slice on axis `axis` with unit steps.
fn slice_on(g: &Graph, n: &Node, axis: i64) -> Option<(i64, i64)> {
    if !n.op.is("Slice") {
        return None;
    }
    let (st, en, ax) = (ints(g, input(n, 1))?, ints(g, input(n, 2))?, ints(g, input(n, 3))?);
    if input(n, 4).is_some_and(|s| ints(g, Some(s)).is_none_or(|v| v != [1])) {
        return None;
    }
    (st.len() == 1 && en.len() == 1 && ax == [axis]).then_some((st[0], en[0]))
}

struct Found {
    u: Outlet,
    ker: Outlet,
    past: Option<Outlet>,
    width: usize,
    v: Outlet,
    present: Option<Outlet>,
}

fn find(g: &Graph, full_id: NodeId) -> Option<Found> {
    let full = g.node(full_id).ok()?;
    let (u, past, w) = if full.op.is("Concat") && full.inputs().len() == 2 {
        let axis_ok = matches!(&full.op, Op::Onnx(o) if o.int("axis") == Some(1));
        let t = g.node(input(full, 0)?.node).ok()?;
        if !axis_ok || !perm_021(t) {
            return None;
        }
        let past = input(t, 0)?;
        let w = g.fact(past).ok()?.shape.as_ref()?.get(2)?.as_known()?;
        (input(full, 1)?, Some(past), w)
    } else if full.op.is("Pad") {
        let pads = ints(g, input(full, 1))?;
        if pads.len() != 6 || pads.iter().enumerate().any(|(i, &p)| (i == 1) != (p != 0)) {
            return None;
        }
        (input(full, 0)?, None, pads[1])
    } else {
        return None;
    };
    let w = usize::try_from(w).ok().filter(|&w| w > 0)?;
    let mut taps: Vec<Option<Outlet>> = vec![None; w];
    let mut present = None;
    for (c, _) in g.consumers(Outlet::new(full_id, 0)) {
        let n = g.node(c).ok()?;
        let (st, _) = slice_on(g, n, 1)?;
        if st == -(w as i64) {
            let outs = g.consumers(Outlet::new(c, 0));
            let [(t, 0)] = outs.as_slice() else { return None };
            if !perm_021(g.node(*t).ok()?) {
                return None;
            }
            present = Some(Outlet::new(*t, 0));
        } else if (1..=w as i64).contains(&st) {
            taps[(st - 1) as usize] = Some(Outlet::new(c, 0));
        } else {
            return None;
        }
    }
    // Each tap times its kernel slice; all kernel slices from one Reshape(ker, [0,0,-1,W]).
    let mut ker = None;
    let mut products = Vec::with_capacity(w);
    for (tap_index, tap) in taps.iter().enumerate() {
        let tap = (*tap)?;
        let prods = g.consumers(tap);
        let [(m, _)] = prods.as_slice() else { return None };
        let mul = g.node(*m).ok()?;
        if !mul.op.is("Mul") {
            return None;
        }
        let other = if input(mul, 0) == Some(tap) { input(mul, 1)? } else { input(mul, 0)? };
        let (sq, _) = onnx_producer(g, other, &["Squeeze"])?;
        let ks = g.node(input(sq, 0)?.node).ok()?;
        let (st, en) = slice_on(g, ks, -1)?;
        if (st, en) != (tap_index as i64, tap_index as i64 + 1) {
            return None;
        }
        let (rs, _) = onnx_producer(g, input(ks, 0)?, &["Reshape"])?;
        if ints(g, input(rs, 1))? != [0, 0, -1, w as i64] {
            return None;
        }
        let k = input(rs, 0)?;
        if ker.is_some_and(|prev| prev != k) {
            return None;
        }
        ker = Some(k);
        products.push(Outlet::new(*m, 0));
    }
    // The products summed (any association), then silu.
    let mut frontier: Vec<Outlet> = products.clone();
    let mut sum = None;
    for _ in 0..w {
        let Some(&o) = frontier.first() else { break };
        let cs = g.consumers(o);
        let [(c, _)] = cs.as_slice() else { return None };
        let n = g.node(*c).ok()?;
        if n.op.is("Add") {
            frontier.retain(|x| !n.inputs().contains(&Some(*x)));
            frontier.insert(0, Outlet::new(*c, 0));
            sum = Some(Outlet::new(*c, 0));
            if frontier.len() == 1 {
                break;
            }
        } else {
            break;
        }
    }
    let acc = if w == 1 { products[0] } else { sum? };
    // silu(acc) = Mul(acc, Sigmoid(acc))
    let cs = g.consumers(acc);
    let sig = cs.iter().find_map(|&(c, _)| g.node(c).ok().filter(|n| n.op.is("Sigmoid")).map(|_| c))?;
    let v = cs.iter().find_map(|&(c, _)| {
        let n = g.node(c).ok()?;
        (n.op.is("Mul") && n.inputs().contains(&Some(acc)) && n.inputs().contains(&Some(Outlet::new(sig, 0)))).then_some(Outlet::new(c, 0))
    })?;
    Some(Found { u, ker: ker?, past, width: w, v, present })
}

pub fn raise(g: &mut Graph) -> Result<bool> {
    let mut changed = false;
    for id in g.topo_order()? {
        if !g.contains(id) {
            continue;
        }
        let Some(f) = find(g, id) else { continue };
        let name = g.node(id)?.name.clone();
        wire_dynamic_conv(g, &name, &f)?;
        changed = true;
    }
    Ok(changed)
}

/// Puts a `DynamicConv` in place of what `f` found: its output and present cache replace
/// `f.v` and `f.present`.
fn wire_dynamic_conv(g: &mut Graph, name: &str, f: &Found) -> Result<()> {
    let v_fact = g.fact(f.v)?.clone();
    let present_fact = match f.present {
        Some(p) => g.fact(p)?.clone(),
        None => jetc_ir::Fact::unknown_rank(v_fact.dtype),
    };
    let mut p = Patch::new();
    let n = p.wire(
        format!("{name}/dynamic_conv"),
        Op::DynamicConv(DynamicConvSpec { width: f.width }),
        vec![Some(PatchOutlet::Existing(f.u)), Some(PatchOutlet::Existing(f.ker)), f.past.map(PatchOutlet::Existing)],
        vec![OutputInfo { name: String::new(), fact: v_fact }, OutputInfo { name: String::new(), fact: present_fact }],
    );
    p.shunt(f.v, PatchOutlet::New { index: n, slot: 0 });
    if let Some(pr) = f.present {
        p.shunt(pr, PatchOutlet::New { index: n, slot: 1 });
    }
    p.apply(g)
}

/// A standard static convolution found around a `CausalConvWithState` node.
struct Standard {
    u: Outlet,
    /// The weight as [channels * W] (index c*W + w).
    weight: Tensor,
    past: Option<Outlet>,
    width: usize,
    v: Outlet,
    present: Option<Outlet>,
}

/// The single consumer of `o`, when it is a [0,2,1] Transpose: that Transpose's output.
fn transposed_by(g: &Graph, o: Outlet) -> Option<Outlet> {
    let cs = g.consumers(o);
    let [(t, 0)] = cs.as_slice() else { return None };
    perm_021(g.node(*t).ok()?).then_some(Outlet::new(*t, 0))
}

fn find_standard(g: &Graph, conv_id: NodeId) -> Option<Standard> {
    let conv = g.node(conv_id).ok()?;
    let Op::Onnx(op) = &conv.op else { return None };
    if op.op_type != "CausalConvWithState" || !op.domain.is_empty() || op.string("activation").is_none_or(|a| a != "silu" && a != "swish") {
        return None;
    }
    if input(conv, 2).is_some() {
        return None;
    }
    let t_in = g.node(input(conv, 0)?.node).ok()?;
    if !perm_021(t_in) {
        return None;
    }
    let u = input(t_in, 0)?;
    // The weight: a constant [C, 1, W], or Reshape(constant [C*W], [-1, 1, W]).
    let w_out = input(conv, 1)?;
    let weight = match const_of(g, w_out) {
        Some(t) => t.clone(),
        None => {
            let (rs, _) = onnx_producer(g, w_out, &["Reshape"])?;
            const_of(g, input(rs, 0)?)?.clone()
        }
    };
    let width = match const_of(g, w_out) {
        Some(t) if t.shape().len() == 3 && t.shape()[1] == 1 => t.shape()[2],
        Some(_) => return None,
        None => {
            let (rs, _) = onnx_producer(g, w_out, &["Reshape"])?;
            let shape = ints(g, input(rs, 1))?;
            let [-1, 1, w] = shape[..] else { return None };
            usize::try_from(w).ok()?
        }
    };
    if width < 2 || weight.numel() % width != 0 {
        return None;
    }
    let weight = weight.reshaped(vec![weight.numel()]).ok()?;
    // past_state = Slice(past, 1, .., axis 2) of jetc's W-wide cache.
    let past = match input(conv, 3) {
        None => None,
        Some(st) => {
            let sl = g.node(st.node).ok()?;
            if slice_on(g, sl, 2)?.0 != 1 {
                return None;
            }
            Some(input(sl, 0)?)
        }
    };
    let v = transposed_by(g, Outlet::new(conv_id, 0))?;
    if !g.consumers(Outlet::new(conv_id, 1)).is_empty() {
        return None;
    }
    // The present cache: Transpose(Slice(full, -W..)) of full = Concat(Transpose(past), u) or
    // Pad(u), when it is there.
    let present = g.consumers(u).into_iter().find_map(|(f, _)| {
        let full = g.node(f).ok()?;
        let fits = match past {
            Some(p) => full.op.is("Concat") && input(full, 1) == Some(u) && g.node(input(full, 0)?.node).ok().is_some_and(|t| perm_021(t) && input(t, 0) == Some(p)),
            None => full.op.is("Pad") && input(full, 0) == Some(u),
        };
        if !fits {
            return None;
        }
        let cs = g.consumers(Outlet::new(f, 0));
        let [(sl, 0)] = cs.as_slice() else { return None };
        (slice_on(g, g.node(*sl).ok()?, 1)?.0 == -(width as i64)).then_some(())?;
        transposed_by(g, Outlet::new(*sl, 0))
    });
    Some(Standard { u, weight, past, width, v, present })
}

/// `CausalConvWithState` short convolutions (as `lower` writes the static ones) back to
/// `DynamicConv` with the weight broadcast over [B, T].
pub fn raise_standard(g: &mut Graph) -> Result<bool> {
    let mut changed = false;
    for id in g.topo_order()? {
        if !g.contains(id) {
            continue;
        }
        let Some(f) = find_standard(g, id) else { continue };
        let name = g.node(id)?.name.clone();
        let dtype = g.fact(f.v)?.dtype;
        let cw = f.weight.numel();
        // kernels = Expand(weight, Shape(u)[0..2] ++ [C*W]).
        let weight = g.add_const(&format!("{name}.weight"), f.weight)?;
        let width_const = g.add_const(&format!("{name}/kernel_width"), Tensor::from_i64(vec![1], &[cw as i64])?)?;
        let unknown = || vec![OutputInfo { name: String::new(), fact: jetc_ir::Fact::unknown_rank(jetc_ir::DType::I64) }];
        let shape_op = OnnxOp::new("Shape", 15).with_attr("start", Attr::Int(0)).with_attr("end", Attr::Int(2));
        let bt = g.add_node(&format!("{name}/batch_and_length"), Op::Onnx(shape_op), vec![Some(f.u)], unknown())?;
        let concat = OnnxOp::new("Concat", 13).with_attr("axis", Attr::Int(0));
        let shape = g.add_node(&format!("{name}/kernel_shape"), Op::Onnx(concat), vec![Some(Outlet::new(bt, 0)), Some(width_const)], unknown())?;
        let expand_out = vec![OutputInfo { name: String::new(), fact: jetc_ir::Fact::unknown_rank(dtype) }];
        let ker = g.add_node(&format!("{name}/kernels"), Op::Onnx(OnnxOp::new("Expand", 13)), vec![Some(weight), Some(Outlet::new(shape, 0))], expand_out)?;
        let found = Found { u: f.u, ker: Outlet::new(ker, 0), past: f.past, width: f.width, v: f.v, present: f.present };
        wire_dynamic_conv(g, &name, &found)?;
        changed = true;
    }
    Ok(changed)
}
