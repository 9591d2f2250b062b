//! Kernel families and their instances. A [`Kernel`] is a problem (the sizes a model needs:
//! heads, head dims, conv width, dtype, flags); [`Params`] are the launch/tile parameters the
//! tuner searches; an [`Instance`] is both, the unit that is rendered, compiled, cached and
//! timed. Everything here is plain data and arithmetic: validation by device limits, shared
//! memory sizes (the same formulas as the templates, which `static_assert` them) and launch
//! geometry, so pruning and planning need no GPU.
use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::error::{CodegenError, Result};
use crate::templates;

/// Activation (and intermediate) storage type; recurrent state is always fp32.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DType {
    Bf16,
    F16,
    F32,
}

impl DType {
    pub fn name(self) -> &'static str {
        match self {
            DType::Bf16 => "bf16",
            DType::F16 => "f16",
            DType::F32 => "f32",
        }
    }
    pub fn parse(s: &str) -> Result<DType> {
        match s {
            "bf16" => Ok(DType::Bf16),
            "f16" | "fp16" => Ok(DType::F16),
            "f32" | "fp32" => Ok(DType::F32),
            _ => Err(CodegenError::Other(format!("unknown dtype `{s}` (bf16, f16 or f32)"))),
        }
    }
    pub fn ctype(self) -> &'static str {
        match self {
            DType::Bf16 => "__nv_bfloat16",
            DType::F16 => "__half",
            DType::F32 => "float",
        }
    }
    /// Tensor-core operand type: f32 activations are fed as bf16 (fp32 accumulation).
    pub fn mma_ctype(self) -> &'static str {
        match self {
            DType::F16 => "__half",
            DType::Bf16 | DType::F32 => "__nv_bfloat16",
        }
    }
    pub fn size(self) -> usize {
        match self {
            DType::Bf16 | DType::F16 => 2,
            DType::F32 => 4,
        }
    }
}

/// A GPU architecture `sm_XY` as the number XY (90 = Hopper).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Arch(pub u32);

impl Arch {
    pub fn parse(s: &str) -> Result<Arch> {
        let digits = s.strip_prefix("sm_").or_else(|| s.strip_prefix("compute_")).unwrap_or(s);
        digits
            .parse::<u32>()
            .ok()
            .filter(|v| (50..=130).contains(v))
            .map(Arch)
            .ok_or_else(|| CodegenError::Other(format!("unknown GPU architecture `{s}` (e.g. sm_90)")))
    }
    pub fn name(self) -> String {
        format!("sm_{}", self.0)
    }
    /// Thread block clusters (distributed shared memory) exist from sm_90 on.
    pub fn has_clusters(self) -> bool {
        self.0 >= 90
    }
}

/// What pruning checks a configuration against: per-block limits of a device (or of an
/// architecture when no device is at hand, [`DeviceLimits::for_arch`]).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct DeviceLimits {
    pub arch: Arch,
    pub max_threads_per_block: usize,
    /// Opt-in maximum dynamic shared memory per block, bytes.
    pub max_smem_per_block: usize,
    pub max_static_smem: usize,
    pub max_cluster: usize,
    pub sm_count: usize,
}

impl DeviceLimits {
    pub fn for_arch(arch: Arch) -> DeviceLimits {
        let smem = match arch.0 {
            90.. => 232_448, // 227 KiB (H100 / H200)
            80 | 87 => 166_912,
            86 | 89 => 101_376,
            _ => 49_152,
        };
        DeviceLimits {
            arch,
            max_threads_per_block: 1024,
            max_smem_per_block: smem,
            max_static_smem: 49_152,
            max_cluster: if arch.has_clusters() { 8 } else { 1 },
            sm_count: if arch.0 >= 90 { 132 } else { 108 },
        }
    }
}

/// JetBlock mixer sizes: `qk_heads` q/k heads, `v_heads` state heads (GVA ratio
/// `v_heads / qk_heads`), head dims, dynamic-conv width.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct MixerDims {
    pub qk_heads: usize,
    pub v_heads: usize,
    pub dk: usize,
    pub dv: usize,
    pub width: usize,
    pub dtype: DType,
}

/// Sizes and input conventions of the chunked gated delta rule.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct ChunkDims {
    pub qk_heads: usize,
    pub v_heads: usize,
    pub dk: usize,
    pub dv: usize,
    pub chunk: usize,
    pub dtype: DType,
    /// q and k arrive raw (JetBlock: SiLU then L2 norm in the loaders) or already normalized.
    pub qk_silu: bool,
    pub qk_l2norm: bool,
    /// Gates from the raw `a`, `b` projections (+ A_log, dt_bias) or given as g, beta (fp32).
    pub raw_gates: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum NormKind {
    RmsNorm,
    GatedRmsNorm,
    L2Norm,
}

impl NormKind {
    pub fn name(self) -> &'static str {
        match self {
            NormKind::RmsNorm => "rmsnorm",
            NormKind::GatedRmsNorm => "gated_rmsnorm",
            NormKind::L2Norm => "l2norm",
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EwOp {
    Silu,
    Sigmoid,
    SiluMul,
    Add,
}

impl EwOp {
    pub fn name(self) -> &'static str {
        match self {
            EwOp::Silu => "silu",
            EwOp::Sigmoid => "sigmoid",
            EwOp::SiluMul => "silu_mul",
            EwOp::Add => "add",
        }
    }
    pub fn binary(self) -> bool {
        matches!(self, EwOp::SiluMul | EwOp::Add)
    }
}

/// A kernel problem: family + the sizes fixed at compile time.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(tag = "family", rename_all = "snake_case")]
pub enum Kernel {
    /// The fused JetBlock decode step (one launch per layer).
    JetDecode(MixerDims),
    /// Chunked gated delta rule, pass 1 (parallel over chunks).
    GdnChunkPrep(ChunkDims),
    /// Chunked gated delta rule, pass 2 (sequential over chunks, state on chip).
    GdnChunkState(ChunkDims),
    /// Dynamic causal conv over a whole prompt.
    DynConvPrefill { channels: usize, width: usize, dtype: DType },
    /// RMSNorm / gated RMSNorm / L2 norm of `heads` groups of `dim` per row.
    RowNorm { kind: NormKind, heads: usize, dim: usize, silu: bool, dtype: DType },
    Elementwise { op: EwOp, dtype: DType },
}

/// Tile / launch parameters (the tuned part). `bv` is the value-column tile where a family has
/// one (0 otherwise).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Params {
    pub bv: usize,
    pub threads: usize,
}

/// Problem sizes known only at run time; `bucket` rounds them for the tuning database.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct RunSize {
    pub batch: usize,
    pub seq: usize,
}

impl RunSize {
    /// Power-of-two buckets of batch and sequence length (each entry tunes a range).
    pub fn bucket(&self) -> String {
        fn p2(x: usize) -> usize {
            x.max(1).next_power_of_two()
        }
        format!("b{}_t{}", p2(self.batch), p2(self.seq))
    }
}

impl Kernel {
    pub fn family(&self) -> &'static str {
        match self {
            Kernel::JetDecode(_) => "jet_decode",
            Kernel::GdnChunkPrep(_) => "gdn_chunk_prep",
            Kernel::GdnChunkState(_) => "gdn_chunk_state",
            Kernel::DynConvPrefill { .. } => "dynconv_prefill",
            Kernel::RowNorm { .. } => "rownorm",
            Kernel::Elementwise { .. } => "elementwise",
        }
    }

    pub fn template(&self) -> &'static str {
        match self {
            Kernel::JetDecode(_) => "jet_decode.cu.j2",
            Kernel::GdnChunkPrep(_) => "gdn_chunk_prep.cu.j2",
            Kernel::GdnChunkState(_) => "gdn_chunk_state.cu.j2",
            Kernel::DynConvPrefill { .. } => "dynconv_prefill.cu.j2",
            Kernel::RowNorm { .. } => "rownorm.cu.j2",
            Kernel::Elementwise { .. } => "elementwise.cu.j2",
        }
    }

    pub fn dtype(&self) -> DType {
        match self {
            Kernel::JetDecode(m) => m.dtype,
            Kernel::GdnChunkPrep(c) | Kernel::GdnChunkState(c) => c.dtype,
            Kernel::DynConvPrefill { dtype, .. } | Kernel::RowNorm { dtype, .. } | Kernel::Elementwise { dtype, .. } => *dtype,
        }
    }

    /// The sizes as a stable short string (names, database keys).
    pub fn problem_id(&self) -> String {
        let d = self.dtype().name();
        match self {
            Kernel::JetDecode(m) => format!("h{}x{}_k{}_v{}_w{}_{d}", m.qk_heads, m.v_heads, m.dk, m.dv, m.width),
            Kernel::GdnChunkPrep(c) | Kernel::GdnChunkState(c) => format!(
                "h{}x{}_k{}_v{}_c{}_{d}{}{}{}",
                c.qk_heads,
                c.v_heads,
                c.dk,
                c.dv,
                c.chunk,
                if c.qk_silu { "_silu" } else { "" },
                if c.qk_l2norm { "_l2" } else { "" },
                if c.raw_gates { "_rawg" } else { "" }
            ),
            Kernel::DynConvPrefill { channels, width, .. } => format!("c{channels}_w{width}_{d}"),
            Kernel::RowNorm { kind, heads, dim, silu, .. } => {
                format!("{}_h{heads}_d{dim}{}_{d}", kind.name(), if *silu { "_silu" } else { "" })
            }
            Kernel::Elementwise { op, .. } => format!("{}_{d}", op.name()),
        }
    }

    /// Default parameters: good choices on the H200 by construction (see
    /// docs/decisions/0005-codegen.md), used when nothing is tuned.
    pub fn default_params(&self) -> Params {
        match self {
            Kernel::JetDecode(m) => {
                // 64 columns x 256 threads where the sizes allow it (Jet-Nemotron: a cluster of
                // dv/64 blocks per head), else the first configuration that tiles the head.
                let lim = DeviceLimits::for_arch(Arch(90));
                let mut choice = Params { bv: m.dv, threads: 256 };
                'search: for bv in [64, 32, 128, 16, m.dv] {
                    for threads in [256, 128, 512, 64, 96, 192, 384, 768] {
                        let p = Params { bv, threads };
                        if self.instance(p).validate(&lim).is_ok() {
                            choice = p;
                            break 'search;
                        }
                    }
                }
                choice
            }
            Kernel::GdnChunkPrep(_) => Params { bv: 0, threads: 256 },
            Kernel::GdnChunkState(c) => {
                let dvp = c.dv.next_multiple_of(16);
                // At least two value tiles per head (more blocks; at dv 32 a 32-wide tile spills
                // 8 bytes on sm_90, a 16-wide one does not).
                Params { bv: [64, 32].into_iter().find(|b| dvp % b == 0 && 2 * b <= dvp).unwrap_or(16), threads: 256 }
            }
            Kernel::DynConvPrefill { .. } | Kernel::Elementwise { .. } => Params { bv: 0, threads: 256 },
            Kernel::RowNorm { dim, .. } => Params { bv: 0, threads: if *dim <= 256 { 64 } else if *dim <= 1024 { 128 } else { 256 } },
        }
    }

    /// Every parameter choice the tuner may try (before pruning).
    pub fn space(&self) -> Vec<Params> {
        let mut out = Vec::new();
        match self {
            Kernel::JetDecode(_) => {
                for bv in [16, 32, 64, 128, 256] {
                    for threads in [64, 96, 128, 192, 256, 384, 512] {
                        out.push(Params { bv, threads });
                    }
                }
            }
            Kernel::GdnChunkPrep(_) => {
                for threads in [128, 256, 512] {
                    out.push(Params { bv: 0, threads });
                }
            }
            Kernel::GdnChunkState(_) => {
                for bv in [16, 32, 64, 128] {
                    for threads in [64, 128, 256] {
                        out.push(Params { bv, threads });
                    }
                }
            }
            Kernel::DynConvPrefill { .. } | Kernel::Elementwise { .. } | Kernel::RowNorm { .. } => {
                for threads in [32, 64, 128, 256, 512] {
                    out.push(Params { bv: 0, threads });
                }
            }
        }
        out
    }

    pub fn instance(&self, params: Params) -> Instance {
        Instance { kernel: self.clone(), params }
    }

    pub fn default_instance(&self) -> Instance {
        self.instance(self.default_params())
    }
}

/// Resource needs of an instance known before compiling.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct StaticResources {
    pub threads: usize,
    pub static_smem: usize,
    pub dynamic_smem: usize,
    pub cluster: usize,
}

/// One compilable kernel: problem + parameters.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Instance {
    pub kernel: Kernel,
    pub params: Params,
}

fn al(x: usize) -> usize {
    x.div_ceil(128) * 128
}

impl Instance {
    /// The C symbol and file stem: family, sizes, parameters.
    pub fn name(&self) -> String {
        let p = &self.params;
        let tile = if p.bv > 0 { format!("_bv{}", p.bv) } else { String::new() };
        format!("jetc_{}_{}{}_t{}", self.kernel.family(), self.kernel.problem_id(), tile, p.threads)
    }

    fn err(&self, msg: impl Into<String>) -> CodegenError {
        CodegenError::config(self.name(), msg)
    }

    /// Shared memory and threads; the formulas mirror the templates' (checked there by
    /// `static_assert` against the value rendered in).
    pub fn resources(&self) -> StaticResources {
        let p = self.params;
        let mut r = StaticResources { threads: p.threads, static_smem: 0, dynamic_smem: 0, cluster: 1 };
        match &self.kernel {
            Kernel::JetDecode(m) => {
                let cq = (p.bv / 4).max(1);
                let rg = (p.threads / cq).max(1);
                let warps = p.threads / 32;
                let slots = if cq < 32 { warps } else { rg };
                r.static_smem = 4 * (2 * m.dk + 3 * p.bv + 2 * slots * p.bv + 4 + warps);
                r.cluster = if p.bv > 0 { m.dv / p.bv } else { 1 };
            }
            Kernel::GdnChunkPrep(c) => {
                let (dkp, dvp) = (c.dk.next_multiple_of(16), c.dv.next_multiple_of(16));
                let (ldk, ldv, ldc, ldt) = (dkp + 8, dvp + 8, c.chunk + 4, c.chunk + 8);
                let warps = p.threads / 32;
                let nb = c.chunk / 16;
                r.dynamic_smem = 3 * al(c.chunk * ldk * 2)
                    + al(c.chunk * ldv * 2)
                    + 2 * al(c.chunk * ldc * 4)
                    + al(c.chunk * ldt * 2)
                    + al(warps * 256 * 4)
                    + al(nb.saturating_sub(1) * 256 * 4)
                    + al(3 * c.chunk * 4);
            }
            Kernel::GdnChunkState(c) => {
                let dkp = c.dk.next_multiple_of(16);
                let (ldk, ldb, ldf, ldt) = (dkp + 8, p.bv + 8, p.bv + 4, c.chunk + 8);
                let warps = p.threads / 32;
                r.dynamic_smem = al(dkp * ldf * 4)
                    + al(dkp * ldb * 2)
                    + 3 * al(c.chunk * ldk * 2)
                    + al(c.chunk * ldf * 4)
                    + al(c.chunk * ldb * 2)
                    + al(c.chunk * ldt * 2)
                    + al(warps * 256 * 4)
                    + al(c.chunk * 4);
            }
            Kernel::RowNorm { .. } => r.static_smem = 4 * (p.threads / 32),
            Kernel::DynConvPrefill { .. } | Kernel::Elementwise { .. } => {}
        }
        r
    }

    /// Static validity against device limits: divisibility of tiles, threads, shared memory,
    /// cluster size. Pruning calls this; so does rendering.
    pub fn validate(&self, lim: &DeviceLimits) -> Result<()> {
        let p = self.params;
        if p.threads == 0 || !p.threads.is_multiple_of(32) || p.threads > lim.max_threads_per_block {
            return Err(self.err(format!("threads {} must be a multiple of 32 up to {}", p.threads, lim.max_threads_per_block)));
        }
        let heads = |qk: usize, v: usize| -> Result<()> {
            if qk == 0 || v == 0 || !v.is_multiple_of(qk) {
                return Err(self.err(format!("value heads {v} must be a positive multiple of q/k heads {qk}")));
            }
            Ok(())
        };
        match &self.kernel {
            Kernel::JetDecode(m) => {
                heads(m.qk_heads, m.v_heads)?;
                if m.width == 0 || m.width > 16 {
                    return Err(self.err(format!("conv width {} outside 1..=16", m.width)));
                }
                if p.bv == 0 || !p.bv.is_multiple_of(4) || m.dv % p.bv != 0 {
                    return Err(self.err(format!("bv {} must be a multiple of 4 dividing dv {}", p.bv, m.dv)));
                }
                let cq = p.bv / 4;
                if !p.threads.is_multiple_of(cq) || m.dk % (p.threads / cq) != 0 {
                    return Err(self.err(format!(
                        "{} threads in rows of {cq} column quads do not tile dk {}",
                        p.threads, m.dk
                    )));
                }
                if p.threads < 64 || p.threads < p.bv {
                    return Err(self.err("needs at least 64 threads and one thread per value column"));
                }
                let rows = m.dk / (p.threads / cq);
                if rows > 32 {
                    return Err(self.err(format!("{rows} state rows of 4 floats per thread would spill")));
                }
                let cluster = m.dv / p.bv;
                if cluster > 1 && (!lim.arch.has_clusters() || cluster > lim.max_cluster) {
                    return Err(self.err(format!(
                        "{cluster} blocks per head need a thread block cluster of {cluster} ({} allows {})",
                        lim.arch.name(),
                        lim.max_cluster
                    )));
                }
            }
            Kernel::GdnChunkPrep(c) | Kernel::GdnChunkState(c) => {
                heads(c.qk_heads, c.v_heads)?;
                if c.chunk == 0 || c.chunk % 16 != 0 || c.chunk > 128 {
                    return Err(self.err(format!("chunk {} must be a multiple of 16 up to 128", c.chunk)));
                }
                if c.dk == 0 || c.dv == 0 || c.dk > 256 {
                    return Err(self.err(format!("dk {} must be in 1..=256 and dv {} positive", c.dk, c.dv)));
                }
                if matches!(self.kernel, Kernel::GdnChunkPrep(_)) {
                    if p.threads < c.chunk {
                        return Err(self.err("pass 1 needs one thread per chunk row"));
                    }
                } else {
                    let dvp = c.dv.next_multiple_of(16);
                    if p.bv == 0 || !p.bv.is_multiple_of(16) || dvp % p.bv != 0 {
                        return Err(self.err(format!("bv {} must be a multiple of 16 dividing dv {} (padded to {dvp})", p.bv, c.dv)));
                    }
                    if p.threads < 64 {
                        return Err(self.err("pass 2 needs at least two warps"));
                    }
                }
            }
            Kernel::DynConvPrefill { channels, width, .. } => {
                if *channels == 0 || *width == 0 || *width > 16 {
                    return Err(self.err("channels must be positive and width 1..=16"));
                }
            }
            Kernel::RowNorm { heads, dim, .. } => {
                if *heads == 0 || *dim == 0 {
                    return Err(self.err("heads and dim must be positive"));
                }
                if dim.div_ceil(p.threads) > 64 {
                    return Err(self.err(format!("{} elements per thread would spill", dim.div_ceil(p.threads))));
                }
            }
            Kernel::Elementwise { .. } => {}
        }
        let r = self.resources();
        if r.static_smem > lim.max_static_smem {
            return Err(self.err(format!("{} B of static shared memory > {}", r.static_smem, lim.max_static_smem)));
        }
        if r.dynamic_smem + r.static_smem > lim.max_smem_per_block {
            return Err(self.err(format!(
                "{} B of shared memory > {} per block on {}",
                r.dynamic_smem + r.static_smem,
                lim.max_smem_per_block,
                lim.arch.name()
            )));
        }
        Ok(())
    }

    /// Template context.
    fn context(&self) -> serde_json::Value {
        let p = self.params;
        let r = self.resources();
        let dtype = self.kernel.dtype();
        let mut ctx = json!({
            "name": self.name(),
            "ctype": dtype.ctype(),
            "mma_ctype": dtype.mma_ctype(),
            "threads": p.threads,
            "bv": p.bv,
            "smem_bytes": r.dynamic_smem,
        });
        let extra = match &self.kernel {
            Kernel::JetDecode(m) => json!({
                "qk_heads": m.qk_heads, "v_heads": m.v_heads, "dk": m.dk, "dv": m.dv, "width": m.width,
                "n_vt": m.dv / p.bv.max(1), "cluster": m.dv / p.bv.max(1) > 1, "streaming": true,
            }),
            Kernel::GdnChunkPrep(c) | Kernel::GdnChunkState(c) => json!({
                "qk_heads": c.qk_heads, "v_heads": c.v_heads, "dk": c.dk, "dv": c.dv, "chunk": c.chunk,
                "qk_silu": c.qk_silu, "qk_l2norm": c.qk_l2norm, "raw_gates": c.raw_gates,
            }),
            Kernel::DynConvPrefill { channels, width, .. } => json!({"channels": channels, "width": width}),
            Kernel::RowNorm { kind, heads, dim, silu, .. } => {
                json!({"kind": kind.name(), "heads": heads, "dim": dim, "silu": silu})
            }
            Kernel::Elementwise { op, .. } => json!({"op": op.name(), "binary": op.binary()}),
        };
        if let (Some(m), Some(e)) = (ctx.as_object_mut(), extra.as_object()) {
            for (k, v) in e {
                m.insert(k.clone(), v.clone());
            }
            let mut summary: Vec<String> = m
                .iter()
                .filter(|(k, _)| k.as_str() != "name" && k.as_str() != "ctype" && k.as_str() != "mma_ctype")
                .map(|(k, v)| format!("{k}={v}"))
                .collect();
            summary.insert(0, format!("dtype={}", dtype.name()));
            m.insert("summary".into(), serde_json::Value::String(summary.join(" ")));
        }
        ctx
    }

    /// Rendered CUDA source (validated against the architecture's limits first).
    pub fn render(&self, lim: &DeviceLimits) -> Result<String> {
        self.validate(lim)?;
        templates::render(self.kernel.template(), &self.context())
    }

    /// Grid and block for a run of `size` (batch rows; sequence length for prefill).
    /// Returns `None` when there is nothing to do (a zero-sized launch).
    pub fn launch_dims(&self, size: RunSize) -> Option<((u32, u32, u32), (u32, u32, u32))> {
        let p = self.params;
        let block = (p.threads as u32, 1, 1);
        let (b, t) = (size.batch, size.seq);
        let grid = match &self.kernel {
            Kernel::JetDecode(m) => (m.dv / p.bv, m.v_heads, b),
            Kernel::GdnChunkPrep(c) => (t.div_ceil(c.chunk), c.v_heads, b),
            Kernel::GdnChunkState(c) => (c.dv.next_multiple_of(16) / p.bv.max(1), c.v_heads, b),
            Kernel::DynConvPrefill { channels, .. } => ((b * t * channels).div_ceil(p.threads), 1, 1),
            Kernel::RowNorm { heads, .. } => (b * t * heads, 1, 1),
            Kernel::Elementwise { .. } => ((b * t).div_ceil(p.threads).min(65_535 * 8), 1, 1),
        };
        if grid.0 == 0 || grid.1 == 0 || grid.2 == 0 || (matches!(self.kernel, Kernel::GdnChunkState(_)) && t == 0) {
            return None;
        }
        let u = |x: usize| u32::try_from(x).ok();
        Some(((u(grid.0)?, u(grid.1)?, u(grid.2)?), block))
    }
}
