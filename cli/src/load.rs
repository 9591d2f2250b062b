//! Model loading for the commands (the pipeline itself lives in the `jetc` facade).
pub use jetc::pipeline::{import, load, load_raised, load_raised_with, load_with, Precision};
