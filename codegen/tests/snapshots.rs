//! Snapshots of the generated CUDA source of representative instances (Jet-Nemotron-2B
//! shapes): a template edit shows up as a reviewed diff. Rendering needs no CUDA.
use jetc_codegen::kernels::{Arch, DType, DeviceLimits, EwOp, Kernel, NormKind, Params};
use jetc_codegen::lower;

fn render(k: &Kernel, p: Option<Params>) -> String {
    let inst = p.map_or_else(|| k.default_instance(), |p| k.instance(p));
    inst.render(&DeviceLimits::for_arch(Arch(90))).expect("render")
}

#[test]
fn generated_sources() {
    let k = lower::jetblock_kernels(12, 96, 256, 4, DType::Bf16);
    insta::assert_snapshot!("jet_decode_2b", render(&k[0], None));
    insta::assert_snapshot!("jet_decode_2b_whole_head", render(&k[0], Some(Params { bv: 256, threads: 512 })));
    insta::assert_snapshot!("gdn_chunk_prep_2b", render(&k[1], None));
    insta::assert_snapshot!("gdn_chunk_state_2b", render(&k[2], None));
    insta::assert_snapshot!("dynconv_prefill_2b", render(&k[3], None));
    insta::assert_snapshot!("gated_rmsnorm_2b", render(&k[4], None));
    let l2 = Kernel::RowNorm { kind: NormKind::L2Norm, heads: 12, dim: 96, silu: true, dtype: DType::Bf16 };
    insta::assert_snapshot!("l2norm_silu", render(&l2, None));
    insta::assert_snapshot!("silu_mul", render(&Kernel::Elementwise { op: EwOp::SiluMul, dtype: DType::Bf16 }, None));
}

#[test]
fn render_rejects_invalid_configurations_with_the_kernel_name() {
    let k = &lower::jetblock_kernels(12, 96, 256, 4, DType::Bf16)[0];
    let e = k.instance(Params { bv: 48, threads: 256 }).render(&DeviceLimits::for_arch(Arch(90))).expect_err("48 does not divide 256");
    assert!(e.to_string().contains("jetc_jet_decode_h12x12_k96_v256_w4_bf16_bv48_t256"), "{e}");
    let e = k.instance(Params { bv: 64, threads: 256 }).render(&DeviceLimits::for_arch(Arch(80))).expect_err("no clusters on sm_80");
    assert!(e.to_string().contains("cluster"), "{e}");
}
