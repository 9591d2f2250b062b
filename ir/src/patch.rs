//! A rewrite under construction (the tract-style patch API): tap existing values, wire new
//! nodes, then shunt old values to new ones. Nothing touches the graph until [`Patch::apply`],
//! which adds the nodes, redirects every use, and prunes what became dead.
use crate::error::Result;
use crate::graph::{Graph, Outlet, OutputInfo};
use crate::op::Op;

/// A value in a patch: already in the graph, or output `slot` of the patch's node `index`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PatchOutlet {
    Existing(Outlet),
    New { index: usize, slot: usize },
}

struct PendingNode {
    name: String,
    op: Op,
    inputs: Vec<Option<PatchOutlet>>,
    outputs: Vec<OutputInfo>,
}

#[derive(Default)]
pub struct Patch {
    nodes: Vec<PendingNode>,
    shunts: Vec<(Outlet, PatchOutlet)>,
}

impl Patch {
    pub fn new() -> Patch {
        Patch::default()
    }

    pub fn tap(&self, o: Outlet) -> PatchOutlet {
        PatchOutlet::Existing(o)
    }

    /// Adds a node; returns its index for [`PatchOutlet::New`].
    pub fn wire(
        &mut self,
        name: impl Into<String>,
        op: Op,
        inputs: Vec<Option<PatchOutlet>>,
        outputs: Vec<OutputInfo>,
    ) -> usize {
        self.nodes.push(PendingNode { name: name.into(), op, inputs, outputs });
        self.nodes.len() - 1
    }

    /// Every use of `old` will read `new` instead.
    pub fn shunt(&mut self, old: Outlet, new: PatchOutlet) {
        self.shunts.push((old, new));
    }

    pub fn apply(self, g: &mut Graph) -> Result<()> {
        let mut ids = Vec::with_capacity(self.nodes.len());
        let resolve = |p: PatchOutlet, ids: &[crate::NodeId]| -> Result<Outlet> {
            match p {
                PatchOutlet::Existing(o) => Ok(o),
                PatchOutlet::New { index, slot } => ids
                    .get(index)
                    .map(|&n| Outlet::new(n, slot))
                    .ok_or_else(|| crate::IrError::Other(format!("patch node {index} used before it is wired"))),
            }
        };
        for n in self.nodes {
            let inputs = n
                .inputs
                .iter()
                .map(|i| i.map(|p| resolve(p, &ids)).transpose())
                .collect::<Result<Vec<_>>>()?;
            ids.push(g.add_node(n.name, n.op, inputs, n.outputs)?);
        }
        for (old, new) in self.shunts {
            let new = resolve(new, &ids)?;
            // The replacement takes over the old value's name so graph outputs keep theirs.
            let name = g.value_name(old).to_string();
            g.replace_uses(old, new)?;
            if !name.is_empty() && g.value_name(new).is_empty() {
                let old_node = g.node_mut(old.node)?;
                old_node.outputs[old.slot].name.clear();
                g.node_mut(new.node)?.outputs[new.slot].name = name;
            }
        }
        g.prune_dead()?;
        Ok(())
    }
}
