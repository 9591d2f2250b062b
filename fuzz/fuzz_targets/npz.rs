//! Fuzz target: arbitrary bytes through the npz reader of `jetc run --inputs`.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = jetc_fuzz::read_npz(data);
});
