//! Kernel launches: argument checking and the grid/CTA loops (the per-CTA
//! thread scheduler is `sched`).

use crate::error::EmuError;
use crate::exec::{Ctx, Thread};
use crate::memory::Memory;
use crate::module::{Entry, Module};
use crate::sched::run_cta;
use crate::shared::SharedMem;
use crate::types::Type;

/// A kernel argument; its variant must match the declared param type
/// (`.b32`/`.b64` params accept either integer signedness).
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Param {
    U32(u32),
    S32(i32),
    U64(u64),
    S64(i64),
    F32(f32),
    F64(f64),
}

impl Param {
    fn bits(self) -> u64 {
        match self {
            Param::U32(v) => u64::from(v),
            Param::S32(v) => u64::from(v as u32),
            Param::U64(v) => v,
            Param::S64(v) => v as u64,
            Param::F32(v) => u64::from(v.to_bits()),
            Param::F64(v) => v.to_bits(),
        }
    }

    fn fits(self, ty: Type) -> bool {
        matches!(
            (self, ty),
            (Param::U32(_), Type::U32 | Type::B32)
                | (Param::S32(_), Type::S32 | Type::B32)
                | (Param::U64(_), Type::U64 | Type::B64)
                | (Param::S64(_), Type::S64 | Type::B64)
                | (Param::F32(_), Type::F32)
                | (Param::F64(_), Type::F64)
        )
    }
}

/// Bounds on one launch.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Instructions issued over all threads (guarded-off ones count).
    pub max_steps: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_steps: 1_000_000_000,
        }
    }
}

/// What a successful launch did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LaunchStats {
    /// Instructions issued over all threads, guarded-off ones included.
    pub instructions: u64,
    pub threads: u64,
}

impl Module {
    /// Runs `entry` over `grid` CTAs of `block` threads each.
    pub fn launch(
        &self,
        memory: &mut Memory,
        entry: &str,
        grid: [u32; 3],
        block: [u32; 3],
        params: &[Param],
        limits: &Limits,
    ) -> Result<LaunchStats, EmuError> {
        let e = self
            .entry(entry)
            .ok_or_else(|| EmuError::UnknownEntry(entry.to_string()))?;
        let params = check_params(e, params)?;
        check_dims(grid, block)?;
        let mut cx = Ctx {
            entry: e,
            mem: memory,
            params: &params,
            ntid: block,
            nctaid: grid,
            ctaid: [0; 3],
            shared: SharedMem::new(e.shared_bytes),
            steps: 0,
            max_steps: limits.max_steps,
        };
        let per_cta = block.iter().map(|&b| b as usize).product::<usize>();
        let mut threads: Vec<Thread> = (0..per_cta)
            .map(|_| Thread::new(e.reg_names.len()))
            .collect();
        let mut status = vec![None; per_cta];
        for z in 0..grid[2] {
            for y in 0..grid[1] {
                for x in 0..grid[0] {
                    cx.ctaid = [x, y, z];
                    run_cta(&mut cx, &mut threads, &mut status)?;
                }
            }
        }
        let n_ctas: u64 = grid.iter().map(|&g| u64::from(g)).product();
        Ok(LaunchStats {
            instructions: cx.steps,
            threads: n_ctas * per_cta as u64,
        })
    }
}

fn check_params(e: &Entry, params: &[Param]) -> Result<Vec<u64>, EmuError> {
    let decl = &e.sig.params;
    let name = || e.sig.name.clone();
    if decl.len() != params.len() {
        return Err(EmuError::ParamCount {
            entry: name(),
            expected: decl.len(),
            got: params.len(),
        });
    }
    for (index, (d, p)) in decl.iter().zip(params).enumerate() {
        if !p.fits(d.ty) {
            let (declared, got) = (d.ty.to_string(), format!("{p:?}"));
            return Err(EmuError::ParamType {
                entry: name(),
                index,
                declared,
                got,
            });
        }
    }
    Ok(params.iter().map(|p| p.bits()).collect())
}

/// CUDA's launch limits (sm_80): at most 1024 threads per CTA, block z up
/// to 64, grid y/z up to 65535, no zero dimension.
fn check_dims(grid: [u32; 3], block: [u32; 3]) -> Result<(), EmuError> {
    let threads: u64 = block.iter().map(|&b| u64::from(b)).product();
    let bad = grid.contains(&0)
        || block.contains(&0)
        || threads > 1024
        || block[2] > 64
        || grid[0] > i32::MAX as u32
        || grid[1] > 65535
        || grid[2] > 65535;
    if bad {
        return Err(EmuError::InvalidLaunch(format!(
            "grid {grid:?}, block {block:?}"
        )));
    }
    Ok(())
}
