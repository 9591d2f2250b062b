//! jetc's model engine, the layer that training and search build on: loading a model file
//! into raised IR (`pipeline`), synthetic decoders at real shapes (`synth`), GGUF models
//! (`gguf_model`), conversion layouts (`convert`), the generation engine (`generate`) and the
//! Jet-Nemotron Hugging Face export (`jet_hf`, `safetensors_out`), and throughput measurement
//! at a chosen context and batch (`bench`).
//!
//! It sits above passes and runtime and below the training, search and CLI crates; the `jetc`
//! facade re-exports it.
pub mod bench;
pub mod convert;
pub mod generate;
pub mod gguf_model;
pub mod jet_hf;
pub mod pipeline;
pub mod safetensors_out;
pub mod synth;
