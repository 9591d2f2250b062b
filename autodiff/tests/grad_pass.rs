//! The grad pass on hand-built graphs: fan-out accumulation and a zero gradient checked by
//! value, and the errors for a non-scalar loss, a non-parameter `wrt` and an op without a
//! rule, each naming what is wrong.
use std::collections::HashMap;

use jetc_autodiff::grad;
use jetc_ir::{DType, Fact, Graph, OnnxOp, Op, Outlet, OutputInfo, Tensor};
use jetc_runtime::{Session, Value};
use ndarray::{ArrayD, IxDyn};

fn node(g: &mut Graph, name: &str, op: &str, inputs: &[Outlet], shape: &[usize]) -> Outlet {
    let info = vec![OutputInfo { name: String::new(), fact: Fact::known(DType::F32, shape) }];
    Outlet::new(g.add_node(name, Op::Onnx(OnnxOp::new(op, 14)), inputs.iter().map(|&i| Some(i)).collect(), info).expect("node"), 0)
}

/// loss = sum(w * x + w * w): dL/dw = x + 2 w (w fans out to three uses).
#[test]
fn fan_out_is_summed_and_unused_parameters_get_zeros() {
    let mut g = Graph::new();
    let x = Outlet::new(g.add_input("x", Fact::known(DType::F32, &[3])).expect("input"), 0);
    let w = g.add_const("w", Tensor::from_f32(vec![3], &[1.0, -2.0, 0.5]).expect("w")).expect("const");
    let unused = g.add_const("unused", Tensor::from_f32(vec![2], &[7.0, 8.0]).expect("u")).expect("const");
    let wx = node(&mut g, "wx", "Mul", &[w, x], &[3]);
    let ww = node(&mut g, "ww", "Mul", &[w, w], &[3]);
    let s = node(&mut g, "s", "Add", &[wx, ww], &[3]);
    let info = vec![OutputInfo { name: String::new(), fact: Fact::known(DType::F32, &[]) }];
    let mut red = OnnxOp::new("ReduceSum", 13);
    red = red.with_attr("keepdims", jetc_ir::Attr::Int(0));
    let loss = Outlet::new(g.add_node("loss", Op::Onnx(red), vec![Some(s)], info).expect("loss"), 0);
    g.add_output("loss", loss).expect("output");
    let grads = grad(&mut g, loss, &[w.node, unused.node]).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(grads[0].output, "grad.w");
    let session = Session::new(&g).expect("session");
    let feed = HashMap::from([("x".to_string(), Value::f32(ArrayD::from_shape_vec(IxDyn(&[3]), vec![0.5, 1.5, -1.0]).unwrap()))]);
    let outs: HashMap<String, Value> = session.run(feed).expect("run").into_iter().collect();
    let gw: Vec<f32> = outs["grad.w"].as_f32().unwrap().iter().copied().collect();
    assert_eq!(gw, vec![0.5 + 2.0, 1.5 - 4.0, -1.0 + 1.0]);
    let gu: Vec<f32> = outs["grad.unused"].as_f32().unwrap().iter().copied().collect();
    assert_eq!(gu, vec![0.0, 0.0]);
}

#[test]
fn errors_name_the_loss_the_parameter_and_the_node() {
    let mut g = Graph::new();
    let x = Outlet::new(g.add_input("x", Fact::known(DType::F32, &[3])).expect("input"), 0);
    let w = g.add_const("w", Tensor::from_f32(vec![3], &[1.0, 2.0, 3.0]).expect("w")).expect("const");
    let y = node(&mut g, "y", "Mul", &[w, x], &[3]);
    let e = grad(&mut g.clone(), y, &[w.node]).unwrap_err().to_string();
    assert!(e.contains("`y`") && e.contains("must be a float scalar"), "{e}");
    // An op without a backward rule on the path.
    let h = node(&mut g, "hardmax", "Hardmax", &[y], &[3]);
    let info = vec![OutputInfo { name: String::new(), fact: Fact::known(DType::F32, &[]) }];
    let loss = Outlet::new(g.add_node("loss", Op::Onnx(OnnxOp::new("ReduceSum", 13).with_attr("keepdims", jetc_ir::Attr::Int(0))), vec![Some(h)], info).expect("loss"), 0);
    let e = grad(&mut g.clone(), loss, &[y.node]).unwrap_err().to_string();
    assert!(e.contains("`y`") && e.contains("not a weight or input"), "{e}");
    let e = grad(&mut g, loss, &[w.node]).unwrap_err().to_string();
    assert!(e.contains("hardmax") && e.contains("Hardmax") && e.contains("no backward rule"), "{e}");
}
