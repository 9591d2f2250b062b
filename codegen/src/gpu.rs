//! The GPU side: probing the driver without panicking, loading compiled instances, launching
//! them on random inputs with poisoned outputs, comparing against [`crate::reference`], and
//! timing with CUDA events (warm-up, L2 flush before every timed launch, median). This is
//! what `jetc tune` (through [`Bench`]) and `jetc gpu-bench` run. Nothing here can run on a
//! machine without a GPU: [`probe`] says why instead.
use std::sync::Arc;

use cudarc::driver::{sys, CudaContext, CudaFunction, CudaSlice, CudaStream, LaunchConfig, PushKernelArg};

use crate::cache::{default_cache_dir, Compiler};
use crate::error::{CodegenError, Result};
use crate::kernels::{Arch, ChunkDims, DType, DeviceLimits, EwOp, Instance, Kernel, MixerDims, NormKind, RunSize};
use crate::reference::{self as r, MixerInputs, MixerShape};
use crate::tune::Bench;

/// What [`probe`] found.
#[derive(Clone, Debug)]
pub struct GpuInfo {
    pub name: String,
    pub arch: Arch,
    pub driver_version: i32,
    pub sm_count: usize,
    pub max_smem_optin: usize,
}

fn drv(what: &str) -> impl Fn(cudarc::driver::DriverError) -> CodegenError + '_ {
    move |e| CodegenError::Driver { what: what.to_string(), msg: format!("{e:?}") }
}

/// Finds a usable GPU: libcuda present, driver >= 13.0, at least one device.
pub fn probe() -> Result<GpuInfo> {
    // SAFETY: only tries to dlopen libcuda.
    if !unsafe { sys::is_culib_present() } {
        return Err(CodegenError::NoGpu("libcuda.so (the NVIDIA driver) is not installed on this machine".into()));
    }
    cudarc::driver::result::init().map_err(|e| CodegenError::NoGpu(format!("cuInit failed: {e:?}")))?;
    let mut version = 0i32;
    // SAFETY: valid out-pointer; the library is loaded.
    unsafe { sys::cuDriverGetVersion(&mut version) }
        .result()
        .map_err(|e| CodegenError::NoGpu(format!("cuDriverGetVersion: {e:?}")))?;
    if version < 13000 {
        return Err(CodegenError::NoGpu(format!("driver supports CUDA {}.{}; jetc's kernels need 13.0", version / 1000, version % 1000 / 10)));
    }
    let count = CudaContext::device_count().map_err(|e| CodegenError::NoGpu(format!("cuDeviceGetCount: {e:?}")))?;
    if count < 1 {
        return Err(CodegenError::NoGpu("the driver sees no GPU".into()));
    }
    let ctx = CudaContext::new(0).map_err(drv("context"))?;
    let (maj, min) = ctx.compute_capability().map_err(drv("compute capability"))?;
    let attr = |a| ctx.attribute(a).map(|v| v.max(0) as usize).map_err(drv("attribute"));
    Ok(GpuInfo {
        name: ctx.name().map_err(drv("name"))?,
        arch: Arch((maj * 10 + min) as u32),
        driver_version: version,
        sm_count: attr(sys::CUdevice_attribute::CU_DEVICE_ATTRIBUTE_MULTIPROCESSOR_COUNT)?,
        max_smem_optin: attr(sys::CUdevice_attribute::CU_DEVICE_ATTRIBUTE_MAX_SHARED_MEMORY_PER_BLOCK_OPTIN)?,
    })
}

/// Result of one checked, timed kernel.
#[derive(Clone, Debug)]
pub struct Report {
    pub ms: f64,
    pub max_err: f32,
    /// Bytes the kernel must move at least (inputs read once, outputs written once).
    pub bytes: usize,
    pub gbps: f64,
}

/// Device buffers of activations in the instance's dtype (bf16/f16 as raw u16 bits).
enum Act {
    U16(CudaSlice<u16>, DType),
    F32(CudaSlice<f32>),
}

pub struct GpuBench {
    ctx: Arc<CudaContext>,
    stream: Arc<CudaStream>,
    compiler: Compiler,
    info: GpuInfo,
    flush: CudaSlice<u8>,
    /// Timed launches per measurement (median taken).
    pub iters: usize,
}

fn to_bits(dtype: DType, x: &[f32]) -> Vec<u16> {
    match dtype {
        DType::F16 => x.iter().map(|v| half::f16::from_f32(*v).to_bits()).collect(),
        _ => x.iter().map(|v| half::bf16::from_f32(*v).to_bits()).collect(),
    }
}

fn from_bits(dtype: DType, x: &[u16]) -> Vec<f32> {
    match dtype {
        DType::F16 => x.iter().map(|v| half::f16::from_bits(*v).to_f32()).collect(),
        _ => x.iter().map(|v| half::bf16::from_bits(*v).to_f32()).collect(),
    }
}

/// Rounds host data to what the device stores.
fn quantize(dtype: DType, x: &[f32]) -> Vec<f32> {
    match dtype {
        DType::F32 => x.to_vec(),
        d => from_bits(d, &to_bits(d, x)),
    }
}

impl GpuBench {
    pub fn new() -> Result<GpuBench> {
        let info = probe()?;
        let compiler = Compiler::new(info.arch, default_cache_dir())?;
        let ctx = CudaContext::new(0).map_err(drv("context"))?;
        let stream = ctx.default_stream();
        let flush = stream.alloc_zeros::<u8>(256 << 20).map_err(drv("L2 flush buffer"))?;
        Ok(GpuBench { ctx, stream, compiler, info, flush, iters: 20 })
    }

    pub fn device_name(&self) -> String {
        self.info.name.clone()
    }

    fn act(&self, dtype: DType, x: &[f32]) -> Result<Act> {
        Ok(match dtype {
            DType::F32 => Act::F32(self.stream.clone_htod(x).map_err(drv("upload"))?),
            d => Act::U16(self.stream.clone_htod(&to_bits(d, x)).map_err(drv("upload"))?, d),
        })
    }

    /// An output buffer filled with NaN (0xFFFF.. is NaN in bf16, f16 and f32).
    fn poisoned(&self, dtype: DType, n: usize) -> Result<Act> {
        Ok(match dtype {
            DType::F32 => Act::F32(self.stream.clone_htod(&vec![f32::NAN; n]).map_err(drv("upload"))?),
            d => Act::U16(self.stream.clone_htod(&vec![0xFFFFu16; n]).map_err(drv("upload"))?, d),
        })
    }

    fn f32s(&self, x: &[f32]) -> Result<CudaSlice<f32>> {
        self.stream.clone_htod(x).map_err(drv("upload"))
    }

    fn read(&self, a: &Act) -> Result<Vec<f32>> {
        match a {
            Act::F32(s) => self.stream.clone_dtoh(s).map_err(drv("download")),
            Act::U16(s, d) => Ok(from_bits(*d, &self.stream.clone_dtoh(s).map_err(drv("download"))?)),
        }
    }

    fn read_f32(&self, s: &CudaSlice<f32>) -> Result<Vec<f32>> {
        self.stream.clone_dtoh(s).map_err(drv("download"))
    }

    fn function(&self, inst: &Instance) -> Result<CudaFunction> {
        let (_, compiled, _) = self.compiler.compile(inst)?;
        let module = self
            .ctx
            .load_module(cudarc::nvrtc::Ptx::from_binary(compiled.cubin.clone()))
            .map_err(drv("load CUBIN"))?;
        let f = module.load_function(&inst.name()).map_err(drv("load function"))?;
        let dynamic = inst.resources().dynamic_smem;
        if dynamic > 48 * 1024 {
            f.set_attribute(sys::CUfunction_attribute::CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES, dynamic as i32)
                .map_err(drv("max dynamic shared memory"))?;
        }
        Ok(f)
    }

    /// Median time of `launch` over `iters` runs, each after an L2 flush.
    fn time(&mut self, launch: &mut dyn FnMut(&CudaStream) -> Result<()>) -> Result<f64> {
        for _ in 0..3 {
            launch(&self.stream)?;
        }
        let mut times = Vec::with_capacity(self.iters);
        for _ in 0..self.iters {
            self.stream.memset_zeros(&mut self.flush).map_err(drv("L2 flush"))?;
            let start = self.ctx.new_event(Some(sys::CUevent_flags::CU_EVENT_DEFAULT)).map_err(drv("event"))?;
            let end = self.ctx.new_event(Some(sys::CUevent_flags::CU_EVENT_DEFAULT)).map_err(drv("event"))?;
            start.record(&self.stream).map_err(drv("event record"))?;
            launch(&self.stream)?;
            end.record(&self.stream).map_err(drv("event record"))?;
            end.synchronize().map_err(drv("kernel"))?;
            times.push(start.elapsed_ms(&end).map_err(drv("elapsed"))? as f64);
        }
        times.sort_by(|a, b| a.total_cmp(b));
        Ok(times[times.len() / 2])
    }

    /// Checks `inst` against the CPU reference at `size`, then times it.
    pub fn check_and_time(&mut self, inst: &Instance, size: RunSize) -> Result<Report> {
        inst.validate(&DeviceLimits { max_smem_per_block: self.info.max_smem_optin, ..DeviceLimits::for_arch(self.info.arch) })?;
        let name = inst.name();
        let (ms, max_err, bytes, tol) = match &inst.kernel {
            Kernel::JetDecode(m) => self.jet_decode(inst, m, size.batch)?,
            Kernel::GdnChunkPrep(c) | Kernel::GdnChunkState(c) => self.gdn_chunk(inst, c, size)?,
            Kernel::DynConvPrefill { channels, width, dtype } => self.dynconv(inst, *channels, *width, *dtype, size)?,
            Kernel::RowNorm { kind, heads, dim, silu, dtype } => self.rownorm(inst, *kind, *heads, *dim, *silu, *dtype, size)?,
            Kernel::Elementwise { op, dtype } => self.elementwise(inst, *op, *dtype, size)?,
        };
        if max_err.is_nan() || max_err > tol {
            return Err(CodegenError::Mismatch { kernel: name, msg: format!("max relative error {max_err:.3e} > {tol:.1e}") });
        }
        Ok(Report { ms, max_err, bytes, gbps: bytes as f64 / (ms * 1e-3) / 1e9 })
    }

    fn cfg(inst: &Instance, size: RunSize) -> Result<LaunchConfig> {
        let (grid, block) = inst
            .launch_dims(size)
            .ok_or_else(|| CodegenError::config(inst.name(), format!("nothing to launch at {size:?}")))?;
        Ok(LaunchConfig { grid_dim: grid, block_dim: block, shared_mem_bytes: inst.resources().dynamic_smem as u32 })
    }

    fn jet_decode(&mut self, inst: &Instance, m: &MixerDims, batch: usize) -> Result<(f64, f32, usize, f32)> {
        let s = MixerShape { batch, seq: 1, heads: m.v_heads, dk: m.dk, dv: m.dv, width: m.width, scale: (m.dk as f32).powf(-0.5), l2_eps: 1e-6, norm_eps: 1e-5 };
        if m.qk_heads != m.v_heads {
            return Err(CodegenError::config(inst.name(), "the GPU check covers GVA ratio 1 only"));
        }
        let mut x = MixerInputs::random(&s, 11);
        for v in [&mut x.q, &mut x.k, &mut x.u, &mut x.ker, &mut x.a, &mut x.b, &mut x.gate, &mut x.conv] {
            *v = quantize(m.dtype, v);
        }
        let want = r::jet_mixer(&s, &x)?;
        let f = self.function(inst)?;
        let d = m.dtype;
        let (hk, c) = (m.qk_heads * m.dk, m.v_heads * m.dv);
        let (q, k, u, ker, a, b, gate) = (self.act(d, &x.q)?, self.act(d, &x.k)?, self.act(d, &x.u)?, self.act(d, &x.ker)?, self.act(d, &x.a)?, self.act(d, &x.b)?, self.act(d, &x.gate)?);
        let (a_log, dt_bias, onorm) = (self.f32s(&x.a_log)?, self.f32s(&x.dt_bias)?, self.f32s(&x.o_norm)?);
        let conv = self.act(d, &x.conv)?;
        let mut state = self.f32s(&x.state)?;
        let out = self.poisoned(d, batch * c)?;
        let strides = [hk as i64, hk as i64, c as i64, (c * m.width) as i64, m.v_heads as i64, m.v_heads as i64, c as i64, c as i64];
        let scalars = [s.scale, s.l2_eps, s.norm_eps, -88.0f32];
        let cfg = Self::cfg(inst, RunSize { batch, seq: 1 })?;
        let launch = |stream: &CudaStream, state: &mut CudaSlice<f32>| -> Result<()> {
            let mut l = stream.launch_builder(&f);
            push_act(&mut l, &q);
            l.arg(&strides[0]);
            push_act(&mut l, &k);
            l.arg(&strides[1]);
            push_act(&mut l, &u);
            l.arg(&strides[2]);
            push_act(&mut l, &ker);
            l.arg(&strides[3]);
            push_act(&mut l, &a);
            l.arg(&strides[4]);
            push_act(&mut l, &b);
            l.arg(&strides[5]);
            push_act(&mut l, &gate);
            l.arg(&strides[6]);
            l.arg(&a_log).arg(&dt_bias).arg(&onorm);
            push_act(&mut l, &conv);
            l.arg(state);
            push_act(&mut l, &out);
            l.arg(&strides[7]);
            l.arg(&scalars[0]).arg(&scalars[1]).arg(&scalars[2]).arg(&scalars[3]);
            // SAFETY: argument list matches the template's signature; buffers are sized for `cfg`.
            unsafe { l.launch(cfg) }.map(|_| ()).map_err(drv("launch jet_decode"))
        };
        launch(&self.stream, &mut state)?;
        let (got_out, got_state, got_conv) = (self.read(&out)?, self.read_f32(&state)?, self.read(&conv)?);
        let err = r::rel_max_err(&got_out, &want.out).max(r::rel_max_err(&got_state, &want.state)).max(r::rel_max_err(&got_conv, &quantize(d, &want.conv)));
        let ms = self.time(&mut |st| launch(st, &mut state))?;
        let bytes = batch * (2 * m.v_heads * m.dk * m.dv * 4 + d.size() * (2 * hk + c * (3 + m.width + 2 * m.width)));
        let tol = if d == DType::F32 { 1e-4 } else { 2e-2 };
        Ok((ms, err, bytes, tol))
    }

    fn gdn_chunk(&mut self, inst: &Instance, c: &ChunkDims, size: RunSize) -> Result<(f64, f32, usize, f32)> {
        if !(c.qk_silu && c.qk_l2norm && c.raw_gates) || c.qk_heads != c.v_heads {
            return Err(CodegenError::config(inst.name(), "the GPU check covers the JetBlock form (raw q/k and gates, GVA 1)"));
        }
        let (batch, t) = (size.batch, size.seq);
        let s = MixerShape { batch, seq: t, heads: c.v_heads, dk: c.dk, dv: c.dv, width: 4, scale: (c.dk as f32).powf(-0.5), l2_eps: 1e-6, norm_eps: 1e-5 };
        let mut x = MixerInputs::random(&s, 5);
        let d = c.dtype;
        for v in [&mut x.q, &mut x.k, &mut x.a, &mut x.b] {
            *v = quantize(d, v);
        }
        let vin = quantize(d, &r::random(batch * t * c.v_heads * c.dv, 99, 1.0));
        // Reference: recurrent gated delta rule on the same (already convolved) values.
        let mut qn = x.q.clone();
        let mut kn = x.k.clone();
        r::silu_l2norm(&mut qn, c.dk, s.l2_eps, 1.0, true, true);
        r::silu_l2norm(&mut kn, c.dk, s.l2_eps, 1.0, true, true);
        let g = jetc_runtime::linear::gated_delta::gated_delta_log_decay(&x.a, &x.a_log, &x.dt_bias).map_err(|e| CodegenError::Other(e.to_string()))?;
        let beta: Vec<f32> = x.b.iter().map(|v| r::sigmoid(*v)).collect();
        // The reference covers batch row 0 only (the recurrent CPU form is the slow part);
        // every row runs the same code on the GPU.
        let (nq, nv, ng, ns) = (t * c.qk_heads * c.dk, t * c.v_heads * c.dv, t * c.v_heads, c.v_heads * c.dk * c.dv);
        let dims = jetc_runtime::linear::Dims::new(1, t, c.v_heads, c.dk, c.dv);
        let gi = jetc_runtime::linear::gated_delta::GatedDeltaInputs {
            q: &qn[..nq], k: &kn[..nq], v: &vin[..nv], g: &g[..ng], beta: &beta[..ng], scale: s.scale, initial_state: Some(&x.state[..ns]),
        };
        let want = jetc_runtime::linear::gated_delta::gated_delta_recurrent(&dims, &gi).map_err(|e| CodegenError::Other(e.to_string()))?;

        let prep_inst = match &inst.kernel { Kernel::GdnChunkPrep(_) => inst.clone(), _ => Kernel::GdnChunkPrep(c.clone()).default_instance() };
        let state_inst = match &inst.kernel { Kernel::GdnChunkState(_) => inst.clone(), _ => Kernel::GdnChunkState(c.clone()).default_instance() };
        let (fp, fs) = (self.function(&prep_inst)?, self.function(&state_inst)?);
        let (hk, cv) = (c.qk_heads * c.dk, c.v_heads * c.dv);
        let (q, k, v, a, b) = (self.act(d, &x.q)?, self.act(d, &x.k)?, self.act(d, &vin)?, self.act(d, &x.a)?, self.act(d, &x.b)?);
        let (a_log, dt_bias) = (self.f32s(&x.a_log)?, self.f32s(&x.dt_bias)?);
        let n_bh = batch * c.v_heads;
        let gbuf = self.f32s(&vec![f32::NAN; n_bh * t])?;
        let (wbuf, ubuf, aqk) = (self.poisoned(d, n_bh * t * c.dk)?, self.poisoned(d, n_bh * t * c.dv)?, self.poisoned(d, n_bh * t * c.chunk)?);
        let state_in = self.f32s(&x.state)?;
        let state_out = self.f32s(&vec![f32::NAN; x.state.len()])?;
        let out = self.poisoned(d, batch * t * cv)?;
        let (qs, vs, gs) = (hk as i64, cv as i64, c.v_heads as i64);
        let (t32, scale, eps, floor) = (t as i32, s.scale, s.l2_eps, -88.0f32);
        let (cfg_p, cfg_s) = (Self::cfg(&prep_inst, size)?, Self::cfg(&state_inst, size)?);
        let run_prep = |stream: &CudaStream| -> Result<()> {
            let mut l = stream.launch_builder(&fp);
            push_act(&mut l, &q);
            l.arg(&qs);
            push_act(&mut l, &k);
            l.arg(&qs);
            push_act(&mut l, &v);
            l.arg(&vs);
            push_act(&mut l, &a);
            push_act(&mut l, &b);
            l.arg(&gs).arg(&a_log).arg(&dt_bias).arg(&gbuf);
            push_act(&mut l, &wbuf);
            push_act(&mut l, &ubuf);
            push_act(&mut l, &aqk);
            l.arg(&t32).arg(&scale).arg(&eps).arg(&floor);
            // SAFETY: matches gdn_chunk_prep's signature (raw gates).
            unsafe { l.launch(cfg_p) }.map(|_| ()).map_err(drv("launch gdn_chunk_prep"))
        };
        let run_state = |stream: &CudaStream| -> Result<()> {
            let mut l = stream.launch_builder(&fs);
            push_act(&mut l, &q);
            l.arg(&qs);
            push_act(&mut l, &k);
            l.arg(&qs);
            l.arg(&gbuf);
            push_act(&mut l, &wbuf);
            push_act(&mut l, &ubuf);
            push_act(&mut l, &aqk);
            l.arg(&state_in).arg(&state_out);
            push_act(&mut l, &out);
            l.arg(&vs).arg(&t32).arg(&scale).arg(&eps);
            // SAFETY: matches gdn_chunk_state's signature.
            unsafe { l.launch(cfg_s) }.map(|_| ()).map_err(drv("launch gdn_chunk_state"))
        };
        run_prep(&self.stream)?;
        run_state(&self.stream)?;
        let (got_o, got_s) = (self.read(&out)?, self.read_f32(&state_out)?);
        if got_o.iter().chain(&got_s).any(|v| !v.is_finite()) {
            return Err(CodegenError::Mismatch { kernel: inst.name(), msg: "NaN/inf in the output or final state (a row was not written?)".into() });
        }
        let err = r::rel_max_err(&got_o[..nv], &want.o).max(r::rel_max_err(&got_s[..ns], &want.state));
        let prep = matches!(inst.kernel, Kernel::GdnChunkPrep(_));
        let ms = if prep { self.time(&mut |st| run_prep(st))? } else { self.time(&mut |st| run_state(st))? };
        let nt = batch * t;
        let bytes = if prep {
            nt * (d.size() * (2 * hk + cv + 2 * c.v_heads) + c.v_heads * (4 + d.size() * (c.dk + c.dv + c.chunk)))
        } else {
            nt * (d.size() * (2 * hk + cv) + c.v_heads * (4 + d.size() * (c.dk + c.dv + c.chunk))) + 2 * n_bh * c.dk * c.dv * 4
        };
        let tol = if d == DType::F32 { 2e-2 } else { 4e-2 };
        Ok((ms, err, bytes, tol))
    }

    fn dynconv(&mut self, inst: &Instance, ch: usize, w: usize, d: DType, size: RunSize) -> Result<(f64, f32, usize, f32)> {
        let (batch, t) = (size.batch, size.seq);
        let u = quantize(d, &r::random(batch * t * ch, 1, 1.0));
        let ker = quantize(d, &r::random(batch * t * ch * w, 2, 0.5));
        let cin = quantize(d, &r::random(batch * ch * w, 3, 1.0));
        let want = jetc_runtime::linear::dynamic_conv::dynamic_conv(
            &jetc_runtime::linear::dynamic_conv::ConvDims { batch, seq: t, channels: ch, width: w }, &u, &ker, Some(&cin),
        )
        .map_err(|e| CodegenError::Other(e.to_string()))?;
        let f = self.function(inst)?;
        let (ub, kb, cb) = (self.act(d, &u)?, self.act(d, &ker)?, self.act(d, &cin)?);
        let (cout, vout) = (self.poisoned(d, cin.len())?, self.poisoned(d, u.len())?);
        let (us, ks, vs, b32, t32) = (ch as i64, (ch * w) as i64, ch as i64, batch as i32, t as i32);
        let cfg = Self::cfg(inst, size)?;
        let launch = |stream: &CudaStream| -> Result<()> {
            let mut l = stream.launch_builder(&f);
            push_act(&mut l, &ub);
            l.arg(&us);
            push_act(&mut l, &kb);
            l.arg(&ks);
            push_act(&mut l, &cb);
            push_act(&mut l, &cout);
            push_act(&mut l, &vout);
            l.arg(&vs).arg(&b32).arg(&t32);
            // SAFETY: matches dynconv_prefill's signature.
            unsafe { l.launch(cfg) }.map(|_| ()).map_err(drv("launch dynconv_prefill"))
        };
        launch(&self.stream)?;
        let err = r::rel_max_err(&self.read(&vout)?, &want.v).max(r::rel_max_err(&self.read(&cout)?, &quantize(d, &want.cache)));
        let ms = self.time(&mut |st| launch(st))?;
        let tol = if d == DType::F32 { 1e-5 } else { 1e-2 };
        Ok((ms, err, batch * t * ch * d.size() * (2 + w), tol))
    }

    #[allow(clippy::too_many_arguments)]
    fn rownorm(&mut self, inst: &Instance, kind: NormKind, heads: usize, dim: usize, silu: bool, d: DType, size: RunSize) -> Result<(f64, f32, usize, f32)> {
        let rows = size.batch * size.seq;
        let n = rows * heads * dim;
        let x = quantize(d, &r::random(n, 1, 2.0));
        let gate = quantize(d, &r::random(n, 2, 2.0));
        let w: Vec<f32> = r::random(dim, 3, 0.5).iter().map(|v| v + 1.0).collect();
        let (eps, scale) = (1e-5f32, 0.5f32);
        let want = match kind {
            NormKind::RmsNorm => x.chunks(dim).flat_map(|row| {
                let inv = 1.0 / (row.iter().map(|v| v * v).sum::<f32>() / dim as f32 + eps).sqrt();
                row.iter().zip(&w).map(move |(v, wi)| v * inv * wi).collect::<Vec<_>>()
            }).collect::<Vec<f32>>(),
            NormKind::GatedRmsNorm => r::gated_rmsnorm(&x, &gate, &w, dim, eps),
            NormKind::L2Norm => {
                let mut y = x.clone();
                r::silu_l2norm(&mut y, dim, eps, scale, silu, true);
                y
            }
        };
        let f = self.function(inst)?;
        let (xb, gb, wb) = (self.act(d, &x)?, self.act(d, &gate)?, self.f32s(&w)?);
        let y = self.poisoned(d, n)?;
        let stride = (heads * dim) as i64;
        let cfg = Self::cfg(inst, size)?;
        let launch = |stream: &CudaStream| -> Result<()> {
            let mut l = stream.launch_builder(&f);
            push_act(&mut l, &xb);
            l.arg(&stride);
            if kind == NormKind::GatedRmsNorm {
                push_act(&mut l, &gb);
                l.arg(&stride);
            }
            if kind != NormKind::L2Norm {
                l.arg(&wb);
            }
            push_act(&mut l, &y);
            l.arg(&stride).arg(&eps);
            if kind == NormKind::L2Norm {
                l.arg(&scale);
            }
            // SAFETY: matches rownorm's signature for this kind.
            unsafe { l.launch(cfg) }.map(|_| ()).map_err(drv("launch rownorm"))
        };
        launch(&self.stream)?;
        let err = r::rel_max_err(&self.read(&y)?, &want);
        let ms = self.time(&mut |st| launch(st))?;
        let ins = if kind == NormKind::GatedRmsNorm { 3 } else { 2 };
        Ok((ms, err, n * d.size() * ins, if d == DType::F32 { 1e-5 } else { 1e-2 }))
    }

    fn elementwise(&mut self, inst: &Instance, op: EwOp, d: DType, size: RunSize) -> Result<(f64, f32, usize, f32)> {
        let n = size.batch * size.seq.max(1) * 4096;
        let a = quantize(d, &r::random(n, 1, 4.0));
        let b = quantize(d, &r::random(n, 2, 4.0));
        let want: Vec<f32> = a.iter().zip(&b).map(|(x, y)| match op {
            EwOp::Silu => r::silu(*x),
            EwOp::Sigmoid => r::sigmoid(*x),
            EwOp::SiluMul => r::silu(*x) * y,
            EwOp::Add => x + y,
        }).collect();
        let f = self.function(inst)?;
        let (ab, bb) = (self.act(d, &a)?, self.act(d, &b)?);
        let y = self.poisoned(d, n)?;
        let n64 = n as i64;
        let cfg = Self::cfg(inst, RunSize { batch: n, seq: 1 })?;
        let launch = |stream: &CudaStream| -> Result<()> {
            let mut l = stream.launch_builder(&f);
            push_act(&mut l, &ab);
            if op.binary() {
                push_act(&mut l, &bb);
            }
            push_act(&mut l, &y);
            l.arg(&n64);
            // SAFETY: matches elementwise's signature for this op.
            unsafe { l.launch(cfg) }.map(|_| ()).map_err(drv("launch elementwise"))
        };
        launch(&self.stream)?;
        let err = r::rel_max_err(&self.read(&y)?, &want);
        let ms = self.time(&mut |st| launch(st))?;
        let ins = if op.binary() { 3 } else { 2 };
        Ok((ms, err, n * d.size() * ins, if d == DType::F32 { 1e-5 } else { 1e-2 }))
    }
}

fn push_act<'a>(l: &mut cudarc::driver::LaunchArgs<'a>, a: &'a Act) {
    match a {
        Act::U16(s, _) => {
            l.arg(s);
        }
        Act::F32(s) => {
            l.arg(s);
        }
    }
}

impl Bench for GpuBench {
    fn device(&self) -> String {
        format!("{} ({})", self.info.name, self.info.arch.name())
    }
    fn limits(&self) -> DeviceLimits {
        DeviceLimits { max_smem_per_block: self.info.max_smem_optin, sm_count: self.info.sm_count, ..DeviceLimits::for_arch(self.info.arch) }
    }
    fn nvrtc_version(&self) -> (i32, i32) {
        self.compiler.nvrtc_version
    }
    fn measure(&mut self, inst: &Instance, size: RunSize) -> Result<f64> {
        self.check_and_time(inst, size).map(|r| r.ms)
    }
}
