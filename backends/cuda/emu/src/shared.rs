//! Per-CTA shared memory with initialization and data-race tracking.
//!
//! Shared addresses are offsets into the CTA's shared window, which starts
//! at 0 and holds the entry's `.shared` arrays in declaration order. The
//! window is not zeroed: reading a byte that no thread of the CTA has
//! written since the CTA started is an error.
//!
//! Time is cut into *barrier intervals*: the stretch between two releases
//! of the CTA's barrier. Within one interval, a byte written by one thread
//! and read or written by another is a race, whatever the two threads'
//! warps are: warp-synchronous shared-memory code is not modelled, so kiln
//! must separate such accesses with `bar.sync` (or exchange values through
//! `shfl.sync`). Intervals are numbered across the whole launch, so a new
//! CTA needs no reset of the per-byte state: anything stamped before the
//! CTA's first interval belongs to an earlier CTA.

/// No thread (a reader or writer slot that is empty).
const NONE: u32 = u32::MAX;

/// What happened to one shared byte. Intervals are launch-wide numbers;
/// 0 never occurs as a live interval, so a fresh state means "untouched".
#[derive(Clone, Copy, Default)]
struct ByteState {
    /// Interval of the last write, and its thread.
    w_iv: u32,
    writer: u32,
    /// Interval of the readers below; two distinct readers are enough to
    /// name a conflicting one for any later writer.
    r_iv: u32,
    r0: u32,
    r1: u32,
    /// 1 + the thread whose `cp.async` into this byte has not landed; 0 if
    /// none.
    pending: u32,
}

/// Why a shared access failed; `exec` turns it into an `EmuError`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Fault {
    OutOfBounds,
    Race {
        addr: u64,
        first: u32,
        second: u32,
    },
    /// The byte is the target of a `cp.async` (by `thread`) still in flight.
    AsyncPending {
        addr: u64,
        thread: u32,
    },
}

/// The shared window of the CTA being run.
pub(crate) struct SharedMem {
    data: Vec<u8>,
    state: Vec<ByteState>,
    /// The current barrier interval.
    interval: u32,
    /// The first interval of the current CTA.
    cta_start: u32,
    /// The first read of a never-written byte in this interval, as
    /// (line, addr). Reported when the interval ends unless a race on it
    /// is found first: the writer may simply be a thread that runs later.
    pending_uninit: Option<(u32, u64)>,
}

impl SharedMem {
    pub fn new(bytes: u64) -> Self {
        let n = bytes as usize;
        SharedMem {
            data: vec![0; n],
            state: vec![ByteState::default(); n],
            interval: 0,
            cta_start: 0,
            pending_uninit: None,
        }
    }

    /// Starts a new CTA: nothing it reads counts as written.
    pub fn start_cta(&mut self) {
        self.advance();
        self.cta_start = self.interval;
    }

    /// Starts the next barrier interval of the current CTA.
    pub fn next_interval(&mut self) {
        self.advance();
    }

    fn advance(&mut self) {
        self.pending_uninit = None;
        if self.interval == u32::MAX - 1 {
            // Wrapping would make stale stamps look current: start over
            // with clean state. Mid-CTA this forgets which bytes were never
            // written (missing an error, never inventing one); it needs
            // four billion barrier intervals, far past the default step
            // limit.
            self.state.fill(ByteState::default());
            self.interval = 0;
            self.cta_start = 0;
        }
        self.interval += 1;
    }

    /// The pending read of an unwritten byte, if any, as (line, addr).
    pub fn pending_uninit(&self) -> Option<(u32, u64)> {
        self.pending_uninit
    }

    /// The in-bounds byte range of a `bytes`-wide access at `addr`.
    fn range(&self, addr: u64, bytes: u64) -> Result<std::ops::Range<usize>, Fault> {
        let end = addr.checked_add(bytes).ok_or(Fault::OutOfBounds)?;
        if end > self.data.len() as u64 {
            return Err(Fault::OutOfBounds);
        }
        Ok(addr as usize..end as usize)
    }

    /// A load by `thread` (linear id in the CTA) at source line `line`.
    pub fn load(&mut self, addr: u64, bytes: u64, thread: u32, line: u32) -> Result<u64, Fault> {
        let r = self.range(addr, bytes)?;
        let (iv, start) = (self.interval, self.cta_start);
        for (i, s) in self.state[r.clone()].iter_mut().enumerate() {
            check_pending(s, addr + i as u64)?;
            if s.w_iv == iv && s.writer != thread {
                let addr = addr + i as u64;
                return Err(race(addr, s.writer, thread));
            }
            if s.w_iv < start && self.pending_uninit.is_none() {
                self.pending_uninit = Some((line, addr + i as u64));
            }
            note_reader(s, iv, thread);
        }
        let mut buf = [0u8; 8];
        buf[..r.len()].copy_from_slice(&self.data[r]);
        Ok(u64::from_le_bytes(buf))
    }

    /// A store of the low `bytes` bytes of `v` by `thread`.
    pub fn store(&mut self, addr: u64, bytes: u64, v: u64, thread: u32) -> Result<(), Fault> {
        let r = self.range(addr, bytes)?;
        let iv = self.interval;
        for (i, s) in self.state[r.clone()].iter_mut().enumerate() {
            let addr = addr + i as u64;
            check_pending(s, addr)?;
            if s.w_iv == iv && s.writer != thread {
                return Err(race(addr, s.writer, thread));
            }
            if s.r_iv == iv {
                let other = if s.r0 != thread { s.r0 } else { s.r1 };
                if other != NONE {
                    return Err(race(addr, other, thread));
                }
            }
            s.w_iv = iv;
            s.writer = thread;
        }
        let n = r.len();
        self.data[r].copy_from_slice(&v.to_le_bytes()[..n]);
        Ok(())
    }
}

impl SharedMem {
    /// Marks `bytes` bytes at `addr` as the target of `thread`'s `cp.async`:
    /// until [`SharedMem::land`], any access to them is a fault. Issuing
    /// over bytes another thread read in this interval is a race, since
    /// the copy may land at any moment.
    pub fn begin_async(&mut self, addr: u64, bytes: u64, thread: u32) -> Result<(), Fault> {
        let r = self.range(addr, bytes)?;
        let iv = self.interval;
        for (i, s) in self.state[r].iter_mut().enumerate() {
            let addr = addr + i as u64;
            check_pending(s, addr)?;
            let other = if s.r0 != thread { s.r0 } else { s.r1 };
            if s.r_iv == iv && other != NONE {
                return Err(race(addr, other, thread));
            }
            s.pending = thread + 1;
        }
        Ok(())
    }

    /// A `cp.async` lands: its bytes become `thread`'s store, now.
    pub fn land(&mut self, addr: u64, data: &[u8], thread: u32) -> Result<(), Fault> {
        let r = self.range(addr, data.len() as u64)?;
        for s in &mut self.state[r] {
            s.pending = 0;
        }
        for (i, chunk) in data.chunks(8).enumerate() {
            let mut word = [0u8; 8];
            word[..chunk.len()].copy_from_slice(chunk);
            let at = addr + 8 * i as u64;
            self.store(at, chunk.len() as u64, u64::from_le_bytes(word), thread)?;
        }
        Ok(())
    }
}

fn check_pending(s: &ByteState, addr: u64) -> Result<(), Fault> {
    match s.pending {
        0 => Ok(()),
        p => Err(Fault::AsyncPending {
            addr,
            thread: p - 1,
        }),
    }
}

fn race(addr: u64, first: u32, second: u32) -> Fault {
    Fault::Race {
        addr,
        first,
        second,
    }
}

/// Records `thread` as a reader in interval `iv`, keeping up to two
/// distinct readers.
fn note_reader(s: &mut ByteState, iv: u32, thread: u32) {
    if s.r_iv != iv {
        *s = ByteState {
            r_iv: iv,
            r0: thread,
            r1: NONE,
            ..*s
        };
    } else if s.r0 != thread && s.r1 == NONE {
        s.r1 = thread;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn races_and_intervals() {
        let mut m = SharedMem::new(16);
        m.start_cta();
        m.store(0, 4, 7, 1).unwrap();
        assert_eq!(m.load(0, 4, 1, 9), Ok(7));
        assert_eq!(m.load(0, 4, 2, 9), Err(race(0, 1, 2)));
        m.next_interval();
        assert_eq!(m.load(0, 4, 2, 9), Ok(7));
        assert_eq!(m.load(2, 2, 3, 9), Ok(0));
        // Readers 2 and 3 in this interval: any other writer races.
        assert_eq!(m.store(3, 1, 0, 2), Err(race(3, 3, 2)));
        assert_eq!(m.store(0, 1, 0, 4), Err(race(0, 2, 4)));
        assert_eq!(m.pending_uninit(), None);
        assert_eq!(m.load(8, 8, 0, 5), Ok(0));
        assert_eq!(m.pending_uninit(), Some((5, 8)));
        assert_eq!(m.load(9, 8, 0, 5), Err(Fault::OutOfBounds));
        assert_eq!(m.store(u64::MAX, 1, 0, 0), Err(Fault::OutOfBounds));
        m.start_cta();
        assert_eq!(m.load(0, 1, 1, 6), Ok(7));
        assert_eq!(m.pending_uninit(), Some((6, 0)));
    }
}
