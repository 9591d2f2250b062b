//! Tuning without a GPU: config-space pruning by device limits, the database's round trip,
//! its recovery from corruption / other schemas, and the tuner loop on a fake bench (failures
//! count as infinitely slow; a second run is served from the database without measuring).
use jetc_codegen::kernels::{Arch, ChunkDims, DType, DeviceLimits, Instance, Kernel, MixerDims, Params, RunSize};
use jetc_codegen::tune::{prune, tune_one, Bench, TuningDb, DB_SCHEMA};
use jetc_codegen::{CodegenError, Result};

fn jet2b() -> Kernel {
    Kernel::JetDecode(MixerDims { qk_heads: 12, v_heads: 12, dk: 96, dv: 256, width: 4, dtype: DType::Bf16 })
}

fn chunk2b() -> ChunkDims {
    ChunkDims { qk_heads: 12, v_heads: 12, dk: 96, dv: 256, chunk: 64, dtype: DType::Bf16, qk_silu: true, qk_l2norm: true, raw_gates: true }
}

struct FakeBench {
    calls: usize,
}

impl Bench for FakeBench {
    fn device(&self) -> String {
        "fake H200".into()
    }
    fn limits(&self) -> DeviceLimits {
        DeviceLimits::for_arch(Arch(90))
    }
    fn nvrtc_version(&self) -> (i32, i32) {
        (13, 0)
    }
    fn measure(&mut self, inst: &Instance, _size: RunSize) -> Result<f64> {
        self.calls += 1;
        // bv 128 "fails validation"; otherwise faster with more threads.
        if inst.params.bv == 128 {
            return Err(CodegenError::Mismatch { kernel: inst.name(), msg: "poisoned output".into() });
        }
        Ok(1.0 / inst.params.threads as f64 + inst.params.bv as f64 * 1e-6)
    }
}

#[test]
fn pruning_follows_device_limits() {
    let k = jet2b();
    let (ok90, rej90) = prune(&k, &DeviceLimits::for_arch(Arch(90)));
    assert!(ok90.contains(&Params { bv: 64, threads: 256 }));
    assert!(!rej90.is_empty());
    // Without clusters (sm_80) only whole-head tiles remain.
    let (ok80, rej80) = prune(&k, &DeviceLimits::for_arch(Arch(80)));
    assert!(!ok80.is_empty() && ok80.iter().all(|p| p.bv == 256), "{ok80:?}");
    assert!(rej80.iter().any(|(_, why)| why.contains("cluster")));
    // Shared memory: the chunked state pass does not fit 99 KiB (sm_86) at bv 128.
    let (ok86, _) = prune(&Kernel::GdnChunkState(chunk2b()), &DeviceLimits::for_arch(Arch(86)));
    let (ok90s, _) = prune(&Kernel::GdnChunkState(chunk2b()), &DeviceLimits::for_arch(Arch(90)));
    assert!(ok86.len() < ok90s.len());
    for p in &ok90s {
        assert!(Kernel::GdnChunkState(chunk2b()).instance(*p).resources().dynamic_smem <= 232_448);
    }
}

#[test]
fn defaults_are_valid_for_presets() {
    for name in jetc_codegen::lower::PRESETS {
        for k in jetc_codegen::lower::preset(name, DType::Bf16).expect("preset") {
            k.default_instance().validate(&DeviceLimits::for_arch(Arch(90))).expect("default valid");
        }
    }
}

#[test]
fn tuner_db_round_trip_and_second_run_from_db() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("tuning.json");
    let mut bench = FakeBench { calls: 0 };
    let mut db = TuningDb::open(&path).expect("open");
    assert!(db.is_empty() && db.rebuilt.is_none());
    let size = RunSize { batch: 64, seq: 1 };
    let t = tune_one(&mut bench, &mut db, &jet2b(), size, &mut |_, _| {}).expect("tune");
    assert!(!t.from_db);
    assert_eq!(t.entry.best.threads, 512);
    assert!(t.entry.trials.iter().any(|tr| tr.params.bv == 128 && tr.ms.is_none() && tr.error.is_some()));
    let measured = bench.calls;
    assert!(measured > 3);
    // A fresh process: reopen, same key -> served from the file, nothing measured.
    let mut db2 = TuningDb::open(&path).expect("reopen");
    assert_eq!(db2.len(), 1);
    let t2 = tune_one(&mut bench, &mut db2, &jet2b(), RunSize { batch: 50, seq: 1 }, &mut |_, _| {}).expect("db");
    assert!(t2.from_db);
    assert_eq!(bench.calls, measured);
    assert_eq!(t2.entry.best, t.entry.best);
    // Another bucket is a new entry.
    let t3 = tune_one(&mut bench, &mut db2, &jet2b(), RunSize { batch: 1, seq: 1 }, &mut |_, _| {}).expect("tune");
    assert!(!t3.from_db);
    assert_eq!(TuningDb::open(&path).expect("reopen").len(), 2);
    let text = std::fs::read_to_string(&path).expect("read");
    assert!(text.contains(&format!("\"schema\": {DB_SCHEMA}")));
}

#[test]
fn corrupt_or_foreign_db_is_reported_and_rebuilt() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("tuning.json");
    for (content, needle) in [
        ("{ this is not json", "not a tuning database"),
        ("{\"schema\": 999, \"entries\": {}}", "schema 999"),
        ("{\"schema\": 1, \"entries\": {\"k\": {\"bogus\": true}}}", "corrupt entries"),
    ] {
        std::fs::write(&path, content).expect("write");
        let mut db = TuningDb::open(&path).expect("open");
        let why = db.rebuilt.clone().expect("reported");
        assert!(why.contains(needle), "{why}");
        assert!(db.is_empty());
        let mut bench = FakeBench { calls: 0 };
        tune_one(&mut bench, &mut db, &jet2b(), RunSize { batch: 8, seq: 1 }, &mut |_, _| {}).expect("tune");
        let again = TuningDb::open(&path).expect("reopen");
        assert!(again.rebuilt.is_none() && again.len() == 1, "rebuilt file is valid");
    }
}

#[test]
fn all_candidates_failing_is_an_error_not_an_entry() {
    struct Broken;
    impl Bench for Broken {
        fn device(&self) -> String {
            "broken".into()
        }
        fn limits(&self) -> DeviceLimits {
            DeviceLimits::for_arch(Arch(90))
        }
        fn nvrtc_version(&self) -> (i32, i32) {
            (13, 0)
        }
        fn measure(&mut self, inst: &Instance, _: RunSize) -> Result<f64> {
            Err(CodegenError::Compile { kernel: inst.name(), status: "x".into(), log: "boom".into() })
        }
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let mut db = TuningDb::open(&dir.path().join("t.json")).expect("open");
    let e = tune_one(&mut Broken, &mut db, &jet2b(), RunSize { batch: 1, seq: 1 }, &mut |_, _| {}).expect_err("fails");
    assert!(e.to_string().contains("every candidate failed"), "{e}");
    assert!(db.is_empty());
}
