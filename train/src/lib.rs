//! Training on top of the executor and the autodiff pass: the optimizer ([`optim`]: AdamW
//! with decoupled weight decay, warmup + cosine schedules, global-norm clipping, parameter
//! groups), the losses ([`loss`]: the normalized MSE of feature distillation), and local
//! teacher-forced distillation of a layout's linear mixers as one graph ([`local`]), and path
//! distillation of a layout run end to end against the teacher's hidden states ([`path`]),
//! with a supernet's candidates and per-step subnet sampling in [`sample`].
pub mod calibrate;
pub mod checkpoint;
pub mod data;
pub mod error;
pub mod feed;
pub mod local;
pub mod loss;
pub mod optim;
pub mod path;
pub mod plot;
pub mod sample;

pub use error::{Result, TrainError};
