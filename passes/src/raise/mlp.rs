//! SwiGLU MLP: `MatMul(Mul(silu(x Wg), x Wu), Wd)` with silu spelled `Mul(a, Sigmoid(a))`
//! (or a `Silu`/`Swish` op), operands in either order -> `SwiGlu(x, Wg, Wu, Wd)`. Gate and up
//! may be the two halves of one packed projection (`MatMul -> Split`): the weight is split.
use jetc_ir::{Graph, Op, Outlet, OutputInfo, Patch, PatchOutlet, Result};

use crate::pattern::{input, linear, linear_part, onnx_producer, slice_cols};

pub fn raise(g: &mut Graph) -> Result<bool> {
    let mut changed = false;
    for id in g.topo_order()? {
        let Ok(node) = g.node(id) else { continue };
        if !node.op.is("MatMul") {
            continue;
        }
        let out = Outlet::new(id, 0);
        let Some((h, wd, _, _)) = linear(g, out) else { continue };
        let Some((mul, _)) = onnx_producer(g, h, &["Mul"]) else { continue };
        let (Some(a), Some(b)) = (input(mul, 0), input(mul, 1)) else { continue };
        let found = [(a, b), (b, a)].into_iter().find_map(|(s, u)| {
            let gate = silu_input(g, s)?;
            let (xg, wg, cg, fg) = linear_part(g, gate)?;
            let (xu, wu, cu, fu) = linear_part(g, u)?;
            (xg == xu && fg == fu).then_some((xg, (wg, cg), (wu, cu)))
        });
        let Some((x, (wg, cg), (wu, cu))) = found else { continue };
        let fact = g.fact(out)?.clone();
        let name = format!("{}/swiglu", node.name);
        let wg = slice_cols(g, wg, cg, &format!("{name}.w_gate"))?;
        let wu = slice_cols(g, wu, cu, &format!("{name}.w_up"))?;
        let mut p = Patch::new();
        let n = p.wire(
            name,
            Op::SwiGlu,
            vec![Some(p.tap(x)), Some(p.tap(wg)), Some(p.tap(wu)), Some(p.tap(wd))],
            vec![OutputInfo { name: String::new(), fact }],
        );
        p.shunt(out, PatchOutlet::New { index: n, slot: 0 });
        p.apply(g)?;
        changed = true;
    }
    Ok(changed)
}

/// `a` when `s = silu(a)`.
fn silu_input(g: &Graph, s: Outlet) -> Option<Outlet> {
    if let Some((n, _)) = onnx_producer(g, s, &["Silu", "Swish"]) {
        return input(n, 0);
    }
    let (mul, _) = onnx_producer(g, s, &["Mul"])?;
    let (a, b) = (input(mul, 0)?, input(mul, 1)?);
    [(a, b), (b, a)].into_iter().find_map(|(x, sig)| {
        let (n, _) = onnx_producer(g, sig, &["Sigmoid"])?;
        (input(n, 0)? == x).then_some(x)
    })
}
