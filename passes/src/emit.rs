//! A small graph writer for passes that build subgraphs: ONNX nodes and IR ops with
//! placeholder facts (inference fills them in afterwards), constants, SiLU.
use jetc_ir::{Attr, DType, Fact, Graph, OnnxOp, Op, Outlet, OutputInfo, Tensor};

pub struct Emit<'g> {
    pub g: &'g mut Graph,
    pub prefix: String,
    pub opset: i64,
}

impl Emit<'_> {
    /// A 1-D i64 constant.
    pub fn ints(&mut self, name: &str, v: &[i64]) -> Result<Outlet, String> {
        self.weight(name, Tensor::from_i64(vec![v.len()], v).map_err(|e| e.to_string())?)
    }

    pub fn scalar(&mut self, name: &str, v: f32) -> Result<Outlet, String> {
        self.weight(name, Tensor::scalar_f32(v))
    }

    pub fn node(&mut self, name: &str, op: Op, inputs: &[Option<Outlet>], outputs: usize) -> Result<Vec<Outlet>, String> {
        let infos = (0..outputs).map(|_| OutputInfo { name: String::new(), fact: Fact::unknown_rank(DType::F32) }).collect();
        let id = self
            .g
            .add_node(format!("{}{name}", self.prefix), op, inputs.to_vec(), infos)
            .map_err(|e| e.to_string())?;
        Ok((0..outputs).map(|s| Outlet::new(id, s)).collect())
    }

    pub fn onnx(&mut self, name: &str, op_type: &str, inputs: &[Outlet], attrs: &[(&str, Attr)]) -> Result<Outlet, String> {
        let mut op = OnnxOp::new(op_type, self.opset);
        for (k, v) in attrs {
            op = op.with_attr(k, v.clone());
        }
        let ins: Vec<Option<Outlet>> = inputs.iter().map(|&o| Some(o)).collect();
        Ok(self.node(name, Op::Onnx(op), &ins, 1)?[0])
    }

    pub fn weight(&mut self, name: &str, t: Tensor) -> Result<Outlet, String> {
        self.g.add_const(&format!("{}{name}", self.prefix), t).map_err(|e| e.to_string())
    }

    pub fn silu(&mut self, name: &str, x: Outlet) -> Result<Outlet, String> {
        let s = self.onnx(&format!("{name}/sigmoid"), "Sigmoid", &[x], &[])?;
        self.onnx(&format!("{name}/silu"), "Mul", &[x, s], &[])
    }
}

