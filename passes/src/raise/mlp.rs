//! SwiGLU MLP: `MatMul(Mul(silu(x Wg), x Wu), Wd)` with silu spelled `Mul(a, Sigmoid(a))`,
//! a `Swish` with alpha 1 or onnxruntime's fused `com.microsoft::QuickGelu` with alpha 1,
//! operands in either order, or the standard `SwiGLU(x Wg, x Wu)` of opset 28 with alpha 1
//! -> `SwiGlu(x, Wg, Wu, Wd)`. Any other alpha is not SiLU and is left as it is. Gate and up
//! may be the two halves of one packed projection (`MatMul -> Split`): the weight is split.
use jetc_ir::{Graph, OnnxOp, Op, Outlet, OutputInfo, Patch, PatchOutlet, Result};

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
        let Some((gated, op)) = onnx_producer(g, h, &["Mul", "SwiGLU"]) else { continue };
        let (Some(a), Some(b)) = (input(gated, 0), input(gated, 1)) else { continue };
        // SwiGLU(A, B) = silu(A) * B: its gate is input 0, already activated.
        let standard = op.op_type == "SwiGLU";
        if standard && !(op.domain.is_empty() && alpha_is_one(op)) {
            continue;
        }
        let pairs = if standard { vec![(a, b)] } else { vec![(a, b), (b, a)] };
        let found = pairs.into_iter().find_map(|(s, u)| {
            let gate = if standard { s } else { silu_input(g, s)? };
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

/// Whether an activation's `alpha` (default 1) is 1, so that `x * sigmoid(alpha x)` is SiLU.
fn alpha_is_one(op: &OnnxOp) -> bool {
    op.float("alpha").unwrap_or(1.0) == 1.0
}

/// `a` when `s = silu(a)`.
fn silu_input(g: &Graph, s: Outlet) -> Option<Outlet> {
    if let Some((n, op)) = onnx_producer(g, s, &["Silu", "Swish", "QuickGelu"]) {
        let silu = match op.op_type.as_str() {
            "Silu" => true,
            "Swish" => op.domain.is_empty() && alpha_is_one(op),
            // QuickGelu's default alpha is 1.702 (a GELU approximation), not 1.
            _ => op.domain == "com.microsoft" && op.float("alpha") == Some(1.0),
        };
        return if silu { input(n, 0) } else { None };
    }
    let (mul, _) = onnx_producer(g, s, &["Mul"])?;
    let (a, b) = (input(mul, 0)?, input(mul, 1)?);
    [(a, b), (b, a)].into_iter().find_map(|(x, sig)| {
        let (n, _) = onnx_producer(g, sig, &["Sigmoid"])?;
        (input(n, 0)? == x).then_some(x)
    })
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use jetc_ir::{Attr, DType, Fact, Tensor};
    use jetc_runtime::{Session, Value};

    use super::*;
    use crate::emit::Emit;

    /// The activation between `x Wg` (gate) and `x Wu` (up), as an exporter writes it.
    #[derive(Clone, Copy, Debug)]
    enum Gate {
        /// Opset 28's `SwiGLU(gate, up)` with this alpha.
        Standard(f32),
        /// `Swish(gate) * up` with this alpha.
        Swish(f32),
        /// `com.microsoft::QuickGelu(gate) * up`, alpha given or left at its default.
        QuickGelu(Option<f32>),
    }

    fn ramp(n: usize, scale: f32) -> Vec<f32> {
        (0..n).map(|i| ((i * 7 % 11) as f32 - 5.0) * scale).collect()
    }

    /// A one-MLP graph `(act(x Wg) * x Wu) Wd`, x of shape [1, 3, 4], hidden 6.
    fn mlp_graph(gate: Gate) -> Graph {
        let mut g = Graph::new();
        let x = g.add_input("x", Fact::known(DType::F32, &[1, 3, 4])).unwrap_or_else(|e| panic!("{e}"));
        let mut e = Emit { g: &mut g, prefix: String::new(), opset: 28 };
        let w = |shape: [usize; 2], s: f32| Tensor::from_f32(shape.to_vec(), &ramp(shape[0] * shape[1], s)).unwrap_or_else(|e| panic!("{e}"));
        let run = |e: &mut Emit| -> Result<Outlet, String> {
            let x = Outlet::new(x, 0);
            let (wg, wu, wd) = (e.weight("wg", w([4, 6], 0.3))?, e.weight("wu", w([4, 6], 0.2))?, e.weight("wd", w([6, 4], 0.1))?);
            let a = e.onnx("gate", "MatMul", &[x, wg], &[])?;
            let b = e.onnx("up", "MatMul", &[x, wu], &[])?;
            let h = match gate {
                Gate::Standard(alpha) => e.onnx("swiglu", "SwiGLU", &[a, b], &[("alpha", Attr::Float(alpha))])?,
                Gate::Swish(alpha) => {
                    let s = e.onnx("act", "Swish", &[a], &[("alpha", Attr::Float(alpha))])?;
                    e.onnx("mul", "Mul", &[b, s], &[])?
                }
                Gate::QuickGelu(alpha) => {
                    let mut op = OnnxOp::new("QuickGelu", 1);
                    op.domain = "com.microsoft".into();
                    if let Some(alpha) = alpha {
                        op = op.with_attr("alpha", Attr::Float(alpha));
                    }
                    let s = e.node("act", Op::Onnx(op), &[Some(a)], 1)?[0];
                    e.onnx("mul", "Mul", &[s, b], &[])?
                }
            };
            e.onnx("down", "MatMul", &[h, wd], &[])
        };
        let y = run(&mut e).unwrap_or_else(|e| panic!("{e}"));
        g.add_output("y", y).unwrap_or_else(|e| panic!("{e}"));
        jetc_ir::infer::infer_graph(&mut g).unwrap_or_else(|e| panic!("{e}"));
        g
    }

    fn output(g: &Graph) -> Vec<f32> {
        let x = Tensor::from_f32(vec![1, 3, 4], &ramp(12, 0.25)).unwrap_or_else(|e| panic!("{e}"));
        let inputs = HashMap::from([("x".to_string(), Value::from_tensor(&x))]);
        let out = Session::new(g).and_then(|s| s.run(inputs)).unwrap_or_else(|e| panic!("{e}"));
        out[0].1.as_f32().map(|a| a.iter().copied().collect()).unwrap_or_else(|| panic!("y is not f32"))
    }

    fn swiglu_count(g: &Graph) -> usize {
        g.topo_order().unwrap_or_else(|e| panic!("{e}")).into_iter().filter(|&id| g.node(id).map(|n| matches!(n.op, Op::SwiGlu)).unwrap_or(false)).count()
    }

    #[test]
    fn silu_in_every_spelling_is_raised_and_other_alphas_are_not() {
        let cases = [
            (Gate::Standard(1.0), true),
            (Gate::Standard(1.5), false),
            (Gate::Swish(1.0), true),
            (Gate::Swish(2.0), false),
            (Gate::QuickGelu(Some(1.0)), true),
            (Gate::QuickGelu(None), false),
        ];
        for (gate, raised) in cases {
            let g = mlp_graph(gate);
            let want = output(&g);
            let mut r = g.clone();
            raise(&mut r).unwrap_or_else(|e| panic!("{gate:?}: {e}"));
            assert_eq!(swiglu_count(&r), usize::from(raised), "{gate:?}");
            // Raised or not, the graph computes what the ONNX kernels compute.
            let got = output(&r);
            for (a, b) in got.iter().zip(&want) {
                assert!((a - b).abs() <= 1e-5 * (1.0 + b.abs()), "{gate:?}: {a} vs {b}");
            }
        }
    }
}
