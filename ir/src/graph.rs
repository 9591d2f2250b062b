//! The graph: petgraph `StableGraph` of [`Node`]s. A value is an [`Outlet`] (node, output
//! slot). Each node lists its inputs by slot; the petgraph edges mirror those lists (one edge
//! per used input slot) so that topological order, consumers and cycle checks come from
//! petgraph. Only the methods here mutate wiring, which keeps the two in step; the verifier
//! checks that they are.
use std::collections::{BTreeMap, HashSet};

use petgraph::stable_graph::{NodeIndex, StableGraph};
use petgraph::visit::EdgeRef;
use petgraph::Direction;

use crate::error::{IrError, Result};
use crate::op::Op;
use crate::shape::Fact;

pub type NodeId = NodeIndex<u32>;

/// A value: output `slot` of `node`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Outlet {
    pub node: NodeId,
    pub slot: usize,
}

impl Outlet {
    pub fn new(node: NodeId, slot: usize) -> Outlet {
        Outlet { node, slot }
    }
}

#[derive(Clone, Debug, PartialEq)]
pub struct OutputInfo {
    /// The value's name (ONNX value name; may be empty for values created by passes).
    pub name: String,
    pub fact: Fact,
}

#[derive(Clone, Debug)]
pub struct Node {
    pub name: String,
    pub op: Op,
    inputs: Vec<Option<Outlet>>,
    pub outputs: Vec<OutputInfo>,
}

impl Node {
    pub fn inputs(&self) -> &[Option<Outlet>] {
        &self.inputs
    }

    /// Input `slot`, or an error naming the node when it is absent.
    pub fn input(&self, slot: usize) -> Result<Outlet> {
        self.inputs.get(slot).copied().flatten().ok_or_else(|| {
            IrError::node(&self.name, self.op.name(), format!("input {slot} is missing"))
        })
    }
}

#[derive(Clone, Debug, PartialEq)]
pub struct GraphOutput {
    pub name: String,
    pub outlet: Outlet,
}

/// Edge weight: (output slot of the source, input slot of the target).
type Wire = (usize, usize);

#[derive(Clone, Debug, Default)]
pub struct Graph {
    g: StableGraph<Node, Wire>,
    /// Graph inputs (nodes whose op is `Op::Input`), in declaration order.
    pub inputs: Vec<NodeId>,
    pub outputs: Vec<GraphOutput>,
    /// Free-form metadata kept from the source model (producer, opsets, ...).
    pub meta: BTreeMap<String, String>,
}

impl Graph {
    pub fn new() -> Graph {
        Graph::default()
    }

    /// Adds a node and wires its inputs. Fails if an input refers to a missing value.
    pub fn add_node(
        &mut self,
        name: impl Into<String>,
        op: Op,
        inputs: Vec<Option<Outlet>>,
        outputs: Vec<OutputInfo>,
    ) -> Result<NodeId> {
        let name = name.into();
        for (slot, input) in inputs.iter().enumerate() {
            if let Some(o) = input {
                self.check_outlet(*o).map_err(|e| {
                    IrError::node(&name, op.name(), format!("input {slot}: {e}"))
                })?;
            }
        }
        let id = self.g.add_node(Node { name, op, inputs: inputs.clone(), outputs });
        for (slot, input) in inputs.iter().enumerate() {
            if let Some(o) = input {
                self.g.add_edge(o.node, id, (o.slot, slot));
            }
        }
        Ok(id)
    }

    /// Adds a graph input node.
    pub fn add_input(&mut self, name: &str, fact: Fact) -> Result<NodeId> {
        let id = self.add_node(name, Op::Input, vec![], vec![OutputInfo { name: name.to_string(), fact }])?;
        self.inputs.push(id);
        Ok(id)
    }

    /// Adds a constant node named `name`.
    pub fn add_const(&mut self, name: &str, tensor: crate::Tensor) -> Result<Outlet> {
        let fact = Fact::known(tensor.dtype(), tensor.shape());
        let id = self.add_node(name, Op::Const(tensor), vec![], vec![OutputInfo { name: name.to_string(), fact }])?;
        Ok(Outlet::new(id, 0))
    }

    pub fn add_output(&mut self, name: &str, outlet: Outlet) -> Result<()> {
        self.check_outlet(outlet)?;
        self.outputs.push(GraphOutput { name: name.to_string(), outlet });
        Ok(())
    }

    fn check_outlet(&self, o: Outlet) -> Result<()> {
        let node = self.g.node_weight(o.node).ok_or_else(|| IrError::Other(format!("no node {:?}", o.node)))?;
        if o.slot >= node.outputs.len() {
            return Err(IrError::Other(format!(
                "node `{}` has {} outputs, slot {} asked",
                node.name,
                node.outputs.len(),
                o.slot
            )));
        }
        Ok(())
    }

    pub fn contains(&self, id: NodeId) -> bool {
        self.g.contains_node(id)
    }

    pub fn node(&self, id: NodeId) -> Result<&Node> {
        self.g.node_weight(id).ok_or_else(|| IrError::Other(format!("no node {id:?}")))
    }

    pub fn node_mut(&mut self, id: NodeId) -> Result<&mut Node> {
        self.g.node_weight_mut(id).ok_or_else(|| IrError::Other(format!("no node {id:?}")))
    }

    pub fn fact(&self, o: Outlet) -> Result<&Fact> {
        let node = self.node(o.node)?;
        node.outputs.get(o.slot).map(|i| &i.fact).ok_or_else(|| {
            IrError::node(&node.name, node.op.name(), format!("no output slot {}", o.slot))
        })
    }

    pub fn node_ids(&self) -> impl Iterator<Item = NodeId> + '_ {
        self.g.node_indices()
    }

    pub fn node_count(&self) -> usize {
        self.g.node_count()
    }

    /// Rewires input `slot` of `node` (None removes it).
    pub fn set_input(&mut self, node: NodeId, slot: usize, source: Option<Outlet>) -> Result<()> {
        if let Some(o) = source {
            self.check_outlet(o)?;
        }
        let old: Vec<_> = self
            .g
            .edges_directed(node, Direction::Incoming)
            .filter(|e| e.weight().1 == slot)
            .map(|e| e.id())
            .collect();
        for e in old {
            self.g.remove_edge(e);
        }
        let n = self.node_mut(node)?;
        if n.inputs.len() <= slot {
            n.inputs.resize(slot + 1, None);
        }
        n.inputs[slot] = source;
        while n.inputs.last() == Some(&None) {
            n.inputs.pop();
        }
        if let Some(o) = source {
            self.g.add_edge(o.node, node, (o.slot, slot));
        }
        Ok(())
    }

    /// Consumers of a value: (node, input slot), sorted for determinism.
    pub fn consumers(&self, o: Outlet) -> Vec<(NodeId, usize)> {
        let mut out: Vec<(NodeId, usize)> = self
            .g
            .edges_directed(o.node, Direction::Outgoing)
            .filter(|e| e.weight().0 == o.slot)
            .map(|e| (e.target(), e.weight().1))
            .collect();
        out.sort();
        out
    }

    /// True when the value is a graph output.
    pub fn is_graph_output(&self, o: Outlet) -> bool {
        self.outputs.iter().any(|go| go.outlet == o)
    }

    /// Redirects every use of `old` (node inputs and graph outputs) to `new`.
    pub fn replace_uses(&mut self, old: Outlet, new: Outlet) -> Result<()> {
        self.check_outlet(new)?;
        for (node, slot) in self.consumers(old) {
            self.set_input(node, slot, Some(new))?;
        }
        for go in &mut self.outputs {
            if go.outlet == old {
                go.outlet = new;
            }
        }
        Ok(())
    }

    /// Removes a node that nothing uses any more.
    pub fn remove_node(&mut self, id: NodeId) -> Result<Node> {
        let node = self.node(id)?;
        let used = self.g.edges_directed(id, Direction::Outgoing).next().is_some()
            || self.outputs.iter().any(|o| o.outlet.node == id);
        if used {
            return Err(IrError::node(&node.name, node.op.name(), "cannot remove a node whose outputs are used"));
        }
        self.inputs.retain(|&i| i != id);
        self.g.remove_node(id).ok_or_else(|| IrError::Other(format!("no node {id:?}")))
    }

    /// Nodes in a deterministic topological order: Kahn's algorithm, ready nodes taken in
    /// order of their first appearance (graph inputs first, then by insertion index).
    pub fn topo_order(&self) -> Result<Vec<NodeId>> {
        let mut indegree: BTreeMap<NodeId, usize> = BTreeMap::new();
        for id in self.g.node_indices() {
            let n = self.g.edges_directed(id, Direction::Incoming).count();
            indegree.insert(id, n);
        }
        let mut ready: std::collections::BTreeSet<NodeId> =
            indegree.iter().filter(|(_, &d)| d == 0).map(|(&id, _)| id).collect();
        let mut order = Vec::with_capacity(indegree.len());
        while let Some(&id) = ready.iter().next() {
            ready.remove(&id);
            order.push(id);
            for e in self.g.edges_directed(id, Direction::Outgoing) {
                if let Some(d) = indegree.get_mut(&e.target()) {
                    *d -= 1;
                    if *d == 0 {
                        ready.insert(e.target());
                    }
                }
            }
        }
        if order.len() != indegree.len() {
            let stuck = indegree
                .iter()
                .find(|(id, &d)| d > 0 && !order.contains(id))
                .and_then(|(id, _)| self.g.node_weight(*id))
                .map(|n| n.name.clone())
                .unwrap_or_default();
            return Err(IrError::Cycle(stuck));
        }
        Ok(order)
    }

    /// Removes every node that no graph output depends on (graph inputs are kept).
    pub fn prune_dead(&mut self) -> Result<usize> {
        let mut live: HashSet<NodeId> = HashSet::new();
        let mut stack: Vec<NodeId> = self.outputs.iter().map(|o| o.outlet.node).collect();
        stack.extend(self.inputs.iter().copied());
        while let Some(id) = stack.pop() {
            if !live.insert(id) {
                continue;
            }
            for e in self.g.edges_directed(id, Direction::Incoming) {
                stack.push(e.source());
            }
        }
        let dead: Vec<NodeId> = self.g.node_indices().filter(|id| !live.contains(id)).collect();
        for &id in &dead {
            self.g.remove_node(id);
        }
        Ok(dead.len())
    }

    /// Value name of an outlet (empty if it has none).
    pub fn value_name(&self, o: Outlet) -> &str {
        self.g
            .node_weight(o.node)
            .and_then(|n| n.outputs.get(o.slot))
            .map(|i| i.name.as_str())
            .unwrap_or("")
    }

    /// Finds a graph input by name.
    pub fn input_by_name(&self, name: &str) -> Option<NodeId> {
        self.inputs.iter().copied().find(|&id| self.value_name(Outlet::new(id, 0)) == name)
    }

    /// Incoming petgraph edges as (source outlet, input slot): the verifier compares them
    /// with the node's input list.
    pub(crate) fn incoming_wires(&self, id: NodeId) -> Vec<(Outlet, usize)> {
        let mut v: Vec<(Outlet, usize)> = self
            .g
            .edges_directed(id, Direction::Incoming)
            .map(|e| (Outlet::new(e.source(), e.weight().0), e.weight().1))
            .collect();
        v.sort();
        v
    }
}
