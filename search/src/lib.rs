//! The PostNAS search over a trained supernet (a `jetc distill --supernet` run):
//! - [`supernet`]: a run's distilled weights, bound into the subnet of any layout, in memory;
//! - [`heatmap`]: the score of every one-attention-layer subnet on each task, as a table,
//!   JSON and a heat map (PNG, SVG), the figure Jet-Nemotron's placement starts from;
//! - [`placement`]: beam (or exhaustive) search for the K layers that keep full attention,
//!   under a per-task objective, beside uniform placement;
//! - [`block`]: the block-selection table and chart (each linear candidate distilled the
//!   same way at one placement);
//! - [`hw`]: the hardware-aware search's grid of (heads, d_k, d_v) at equal recurrent state,
//!   its Pareto front (decode throughput, objective) and pick.
//!
//! The crate sits above `jetc-train` and `jetc-eval`: it scores subnets with the evaluation
//! suite and reads the training checkpoints, and nothing below imports it.
pub mod block;
pub mod boundary;
pub mod error;
pub mod heatmap;
pub mod hw;
pub mod placement;
pub mod supernet;

pub use error::{Result, SearchError};
