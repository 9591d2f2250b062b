//! Passes over the IR and the pass manager that verifies the graph after each one.
//!
//! A [`Pass`] rewrites a graph in place and reports whether it changed anything. The
//! [`PassManager`] runs a pipeline, runs the verifier after every pass, and names the pass
//! in any error, so a broken rewrite is caught where it happens.

pub mod cse;
pub mod emit;
pub mod error;
pub mod fuse;
pub mod fold;
pub mod linearize;
pub mod lower;
pub mod manager;
pub mod pass;
pub mod pattern;
pub mod raise;
pub mod shape_of;
pub mod summary;
pub mod supernet;
pub mod swa;

pub use error::{PassError, Result};
pub use raise::Raise;
pub use manager::{pass_by_name, PassManager, PASS_NAMES};
pub use pass::{FnPass, Pass};
