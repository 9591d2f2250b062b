//! Weights kept in a stored precision run through the executor: `MatMul` and `Gather` read
//! their blocks (checked against an f64 product on the reference de-quantization), and any
//! other op gets their f32 values, made once and counted by the session.
use std::collections::HashMap;

use jetc_ir::blocks::BlockFormat;
use jetc_ir::{DType, Fact, Graph, OnnxOp, Op, Outlet, OutputInfo, Tensor};
use jetc_runtime::{Session, Value};
use ndarray::{ArrayD, IxDyn};

fn values(n: usize, seed: u64) -> Vec<f32> {
    let mut s = seed;
    (0..n)
        .map(|_| {
            s = s.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            ((s >> 33) as f32 / (1u64 << 31) as f32) - 0.5
        })
        .collect()
}

fn node(g: &mut Graph, name: &str, op: &str, inputs: &[Outlet], shape: &[usize], dtype: DType) -> Outlet {
    let mut o = OnnxOp::new(op, 13);
    if op == "Gather" {
        o.attrs.insert("axis".into(), jetc_ir::Attr::Int(0));
    }
    let info = vec![OutputInfo { name: String::new(), fact: Fact::known(dtype, shape) }];
    Outlet::new(g.add_node(name, Op::Onnx(o), inputs.iter().map(|&i| Some(i)).collect(), info).expect("node"), 0)
}

#[test]
fn stored_weights_are_read_in_blocks_and_decoded_only_for_other_ops() {
    for format in [BlockFormat::Q8_0, BlockFormat::Q4_1, BlockFormat::F16] {
        let (m, k, n) = (3, 64, 40);
        // W: n rows of k (a linear layer as ggml stores it); the graph's B is its transpose.
        let bytes = format.encode(&values(n * k, 7)).expect("encode");
        let mut w = vec![0.0f32; n * k];
        format.decode(&bytes, &mut w);
        let wt = Tensor::from_stored(format, n, k, true, bytes.clone()).expect("stored");
        let table = Tensor::from_stored(format, n, k, false, bytes).expect("table");
        let mut g = Graph::new();
        let x = Outlet::new(g.add_input("x", Fact::known(DType::F32, &[m, k])).expect("x"), 0);
        let ids = Outlet::new(g.add_input("ids", Fact::known(DType::I64, &[2])).expect("ids"), 0);
        let wo = g.add_const("w", wt).expect("w");
        let to = g.add_const("table", table).expect("table");
        let y = node(&mut g, "mm", "MatMul", &[x, wo], &[m, n], DType::F32);
        let rows = node(&mut g, "gather", "Gather", &[to, ids], &[2, k], DType::F32);
        g.add_output("y", y).expect("y");
        g.add_output("rows", rows).expect("rows");
        let xs = values(m * k, 3);
        let feed = || {
            HashMap::from([
                ("x".to_string(), Value::f32(ArrayD::from_shape_vec(IxDyn(&[m, k]), xs.clone()).expect("x"))),
                ("ids".to_string(), Value::i64(ArrayD::from_shape_vec(IxDyn(&[2]), vec![5, -1]).expect("ids"))),
            ])
        };
        let s = Session::new(&g).expect("session");
        let out = s.run(feed()).expect("run");
        let got = out[0].1.as_f32().expect("y");
        for r in 0..m {
            for c in 0..n {
                let want: f64 = (0..k).map(|i| xs[r * k + i] as f64 * w[c * k + i] as f64).sum();
                let e = (got[[r, c]] as f64 - want).abs();
                assert!(e < 1e-5 * (1.0 + want.abs()), "{format}: y[{r},{c}] {} vs {want}", got[[r, c]]);
            }
        }
        let rows = out[1].1.as_f32().expect("rows");
        assert_eq!(rows.shape(), &[2, k]);
        assert_eq!(rows.as_slice().expect("rows")[..k], w[5 * k..6 * k], "{format}: row 5");
        assert_eq!(rows.as_slice().expect("rows")[k..], w[(n - 1) * k..], "{format}: row -1");
        assert_eq!(s.dense_weight_bytes(), 0, "{format}: MatMul and Gather read the blocks");

        // An op without a block kernel gets the f32 values (the transpose of W here).
        let t = node(&mut g, "neg", "Neg", &[wo], &[k, n], DType::F32);
        g.add_output("neg", t).expect("neg");
        let s = Session::new(&g).expect("session");
        let out = s.run(feed()).expect("run");
        let neg = out[2].1.as_f32().expect("neg");
        for r in 0..k {
            for c in 0..n {
                assert_eq!(neg[[r, c]], -w[c * k + r], "{format}: Neg of W^T at [{r},{c}]");
            }
        }
        assert_eq!(s.dense_weight_bytes(), 4 * n * k, "{format}: the f32 copy is counted");
    }
}
