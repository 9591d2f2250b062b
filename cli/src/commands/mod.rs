//! One module per `jetc` subcommand.
pub mod convert;
pub mod dump;
pub mod export;
pub mod inspect;
pub mod run;
pub mod synth;
