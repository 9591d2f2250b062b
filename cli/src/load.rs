//! Model loading for the commands (the pipeline itself lives in the `jetc` facade).
pub use jetc::pipeline::{import, load, load_raised};
