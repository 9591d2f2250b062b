//! One module per `jetc` subcommand.
pub mod dump;
pub mod export;
pub mod inspect;
pub mod run;
pub mod synth;
