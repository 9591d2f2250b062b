//! One module per `jetc` subcommand.
pub mod bench;
pub mod codegen;
pub mod convert;
pub mod distill;
pub mod dump;
pub mod eval;
pub mod export;
pub mod generate;
pub mod inspect;
pub mod postnas;
pub mod run;
pub mod search;
pub mod synth;
pub mod tune;
