//! Fuzz target: arbitrary bytes through the ONNX importer and, when they import, the passes
//! of `jetc::pipeline::load_raised` and `summarize` (see `jetc_fuzz::import_pipeline`).
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = jetc_fuzz::import_pipeline(data);
});
