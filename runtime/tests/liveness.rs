//! The executor frees each value after its last use and reports the peak it kept alive.
use std::collections::HashMap;

use jetc_ir::{DType, Fact, Graph, OnnxOp, Op, Outlet, OutputInfo};
use jetc_runtime::{Session, Value};
use ndarray::{ArrayD, IxDyn};

#[test]
fn a_chain_keeps_two_values_alive_and_a_fan_out_three() {
    let n = 1000;
    let mut g = Graph::new();
    let x = g.add_input("x", Fact::known(DType::F32, &[n])).expect("input");
    let mut cur = Outlet::new(x, 0);
    let info = || vec![OutputInfo { name: String::new(), fact: Fact::known(DType::F32, &[n]) }];
    for i in 0..10 {
        cur = Outlet::new(g.add_node(format!("neg{i}"), Op::Onnx(OnnxOp::new("Neg", 13)), vec![Some(cur)], info()).expect("node"), 0);
    }
    g.add_output("y", cur).expect("output");
    let s = Session::new(&g).expect("session");
    let feed = || HashMap::from([("x".to_string(), Value::f32(ArrayD::zeros(IxDyn(&[n]))))]);
    s.run(feed()).expect("run");
    assert_eq!(s.last_peak_bytes(), 2 * 4 * n, "a chain holds its input and output only");

    // x used again at the end: it stays alive through the chain.
    let add = g.add_node("add", Op::Onnx(OnnxOp::new("Add", 14)), vec![Some(cur), Some(Outlet::new(x, 0))], info()).expect("add");
    g.outputs.clear();
    g.add_output("y", Outlet::new(add, 0)).expect("output");
    let s = Session::new(&g).expect("session");
    s.run(feed()).expect("run");
    assert_eq!(s.last_peak_bytes(), 3 * 4 * n);
}
