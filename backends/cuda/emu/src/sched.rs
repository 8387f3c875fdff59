//! The CTA scheduler: runs the threads of one CTA, warp by warp, until each
//! blocks, and decides when blocked threads resume.
//!
//! * A warp's lanes run one after another until each exits, waits at
//!   `bar.sync` or waits at a warp collective. When a lane waits at a
//!   collective, every other lane of its warp must wait at that same
//!   instruction (else `DivergentCollective`); the collective's results are
//!   then computed from all lanes at once and the lanes run on. A warp is
//!   done for now when no lane is left at a collective.
//! * When every warp is done, either all threads have exited (the CTA is
//!   finished) or the live threads wait at a barrier. Exited threads do not
//!   count, as in PTX (`bar.sync` waits for the CTA's non-exited threads);
//!   live threads waiting at different `bar.sync` instructions are a
//!   `DivergentBarrier`. Otherwise all are released, a new barrier interval
//!   of the shared memory starts, and the loop repeats.
//!
//! Code without barriers or collectives thus runs each thread straight to
//! its exit, as before.

use crate::error::EmuError;
use crate::exec::{Ctx, Status, Thread};
use crate::inst::{Inst, Op};
use crate::warp::{ballot, shfl_source};

/// Lanes per warp.
const WARP: usize = 32;

/// Runs one CTA; `status` has one slot per thread (`None`: ready to run).
pub(crate) fn run_cta(
    cx: &mut Ctx,
    threads: &mut [Thread],
    status: &mut [Option<Status>],
) -> Result<(), EmuError> {
    let [bx, by, _] = cx.ntid;
    for (i, t) in threads.iter_mut().enumerate() {
        let i = i as u32;
        t.reset([i % bx, (i / bx) % by, i / (bx * by)], i);
    }
    status.fill(None);
    cx.shared.start_cta();
    loop {
        for (ts, ss) in threads.chunks_mut(WARP).zip(status.chunks_mut(WARP)) {
            run_warp(cx, ts, ss).map_err(|e| explain(cx, e))?;
        }
        check_uninit(cx)?;
        if !barrier_reached(cx, status)? {
            return Ok(());
        }
        cx.shared.next_interval();
        for s in status.iter_mut() {
            if matches!(s, Some(Status::Barrier(_))) {
                *s = None;
            }
        }
    }
}

/// A read of never-written shared memory earlier in this interval is the
/// likely cause of any later failure except a race (the garbage value may
/// have steered addresses or control flow), so it is reported instead.
fn explain(cx: &Ctx, e: EmuError) -> EmuError {
    match (cx.shared.pending_uninit(), &e) {
        (_, EmuError::SharedRace { .. }) | (None, _) => e,
        (Some((line, addr)), _) => EmuError::UninitializedShared {
            entry: cx.name(),
            line,
            addr,
        },
    }
}

/// At the end of a barrier interval, a read of a shared byte that no
/// thread wrote (not even later in the interval) is an error.
fn check_uninit(cx: &Ctx) -> Result<(), EmuError> {
    match cx.shared.pending_uninit() {
        Some((line, addr)) => Err(EmuError::UninitializedShared {
            entry: cx.name(),
            line,
            addr,
        }),
        None => Ok(()),
    }
}

/// Whether live threads wait at a barrier (all at the same one) rather
/// than all threads having exited.
fn barrier_reached(cx: &Ctx, status: &[Option<Status>]) -> Result<bool, EmuError> {
    let mut at: Option<usize> = None;
    for s in status {
        // After `run_warp` only exited and barrier-waiting threads remain.
        if let Some(Status::Barrier(pc)) = *s {
            match at {
                Some(first) if first != pc => {
                    return Err(EmuError::DivergentBarrier {
                        entry: cx.name(),
                        line: cx.entry.insts[first].line,
                    })
                }
                _ => at = Some(pc),
            }
        }
    }
    Ok(at.is_some())
}

/// Runs the ready lanes of one warp until none is left at a collective.
fn run_warp(
    cx: &mut Ctx,
    threads: &mut [Thread],
    status: &mut [Option<Status>],
) -> Result<(), EmuError> {
    let entry = cx.entry;
    loop {
        for (t, s) in threads.iter_mut().zip(status.iter_mut()) {
            if s.is_none() {
                *s = Some(t.run_until_blocked(cx)?);
            }
        }
        let Some(pc) = status.iter().find_map(|s| match *s {
            Some(Status::Collective(pc)) => Some(pc),
            _ => None,
        }) else {
            return Ok(());
        };
        let inst = &entry.insts[pc];
        if status.iter().any(|s| *s != Some(Status::Collective(pc))) {
            return Err(EmuError::DivergentCollective {
                entry: cx.name(),
                line: inst.line,
            });
        }
        if crate::tensor::is_tensor(inst) {
            crate::tensor::collective(cx, inst, threads)?;
        } else {
            collective(cx, inst, threads)?;
        }
        status.fill(None);
    }
}

/// Computes a collective for all lanes of a warp (all waiting at `inst`)
/// and writes each lane's result.
fn collective(cx: &Ctx, inst: &Inst, threads: &mut [Thread]) -> Result<(), EmuError> {
    let n = threads.len();
    let lanes = if n == WARP { u32::MAX } else { (1u32 << n) - 1 };
    let mask = match inst.op {
        Op::Shfl { mask, .. } | Op::Ballot { mask, .. } => mask,
        _ => lanes,
    };
    if mask != lanes {
        return Err(EmuError::MemberMask {
            entry: cx.name(),
            line: inst.line,
            mask,
            lanes,
        });
    }
    let mut inputs = [[0u64; 2]; WARP];
    for (i, t) in threads.iter().enumerate() {
        inputs[i] = t.collective_inputs(inst, cx)?;
    }
    let mut out = [0u64; WARP];
    match inst.op {
        Op::Shfl { mode, c, .. } => {
            for (lane, o) in out[..n].iter_mut().enumerate() {
                let b = inputs[lane][1];
                let j = shfl_source(mode, lane as u32, b as u32, c);
                let src = inputs.get(j as usize).filter(|_| (j as usize) < n);
                let missing = || EmuError::ShflSourceMissing {
                    entry: cx.name(),
                    line: inst.line,
                    lane: lane as u32,
                    from_lane: j,
                };
                *o = src.ok_or_else(missing)?[0];
            }
        }
        Op::Ballot { .. } => {
            let bits = ballot(inputs[..n].iter().map(|i| i[0] != 0));
            out.fill(u64::from(bits));
        }
        _ => {}
    }
    for (t, &v) in threads.iter_mut().zip(&out) {
        t.finish_collective(inst, v, cx);
    }
    Ok(())
}
