//! Emulated global memory: separate allocations at distinct device
//! addresses, with every access checked to lie inside one allocation.

use crate::error::EmuError;

/// Address of the first allocation; nonzero so a null pointer never hits.
const BASE: u64 = 0x1_0000_0000;
/// Unmapped bytes between allocations, so an overrun never reaches a
/// neighbour.
const GAP: u64 = 64 * 1024;
/// Allocation start alignment (like cudaMalloc's).
const ALIGN: u64 = 256;

struct Alloc {
    base: u64,
    data: Vec<u8>,
}

/// Global memory of one emulated device. Fresh allocations are zeroed; the
/// caller writes the inputs.
pub struct Memory {
    /// Sorted by `base` (addresses only grow).
    allocs: Vec<Alloc>,
    next: u64,
}

/// Lists the allocations (base and length), not their contents.
impl std::fmt::Debug for Memory {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let spans = self.allocs.iter().map(|a| (a.base, a.data.len()));
        f.debug_struct("Memory")
            .field("allocs", &spans.collect::<Vec<_>>())
            .finish()
    }
}

impl Default for Memory {
    fn default() -> Self {
        Self::new()
    }
}

impl Memory {
    pub fn new() -> Self {
        Memory {
            allocs: Vec::new(),
            next: BASE,
        }
    }

    /// Allocates `bytes` zeroed bytes and returns their device address.
    pub fn alloc(&mut self, bytes: usize) -> u64 {
        self.push(vec![0; bytes])
    }

    /// Maps `data` as a new allocation after a gap.
    fn push(&mut self, data: Vec<u8>) -> u64 {
        let base = self.next;
        self.next = (base + data.len() as u64 + GAP).div_ceil(ALIGN) * ALIGN;
        self.allocs.push(Alloc { base, data });
        base
    }

    /// The allocation index and offset of `[addr, addr+len)`, if it lies
    /// inside one allocation.
    fn locate(&self, addr: u64, len: u64) -> Option<(usize, usize)> {
        let i = self
            .allocs
            .partition_point(|a| a.base <= addr)
            .checked_sub(1)?;
        let a = &self.allocs[i];
        let off = addr - a.base;
        let end = off.checked_add(len)?;
        (end <= a.data.len() as u64).then_some((i, off as usize))
    }

    fn host_oob(addr: u64, bytes: u64) -> EmuError {
        EmuError::HostOutOfBounds { addr, bytes }
    }

    /// Copies `data` to `addr`.
    pub fn write(&mut self, addr: u64, data: &[u8]) -> Result<(), EmuError> {
        let len = data.len() as u64;
        let (i, off) = self
            .locate(addr, len)
            .ok_or_else(|| Self::host_oob(addr, len))?;
        self.allocs[i].data[off..off + data.len()].copy_from_slice(data);
        Ok(())
    }

    /// Copies `len` bytes from `addr`.
    pub fn read(&self, addr: u64, len: usize) -> Result<Vec<u8>, EmuError> {
        let (i, off) = self
            .locate(addr, len as u64)
            .ok_or_else(|| Self::host_oob(addr, len as u64))?;
        Ok(self.allocs[i].data[off..off + len].to_vec())
    }

    /// Allocates and fills a buffer with `vals`; returns its address.
    pub fn alloc_f32s(&mut self, vals: &[f32]) -> u64 {
        let bytes: Vec<u8> = vals.iter().flat_map(|v| v.to_le_bytes()).collect();
        self.push(bytes)
    }

    pub fn write_f32s(&mut self, addr: u64, vals: &[f32]) -> Result<(), EmuError> {
        let bytes: Vec<u8> = vals.iter().flat_map(|v| v.to_le_bytes()).collect();
        self.write(addr, &bytes)
    }

    pub fn read_f32s(&self, addr: u64, n: usize) -> Result<Vec<f32>, EmuError> {
        let b = self.read(addr, n * 4)?;
        Ok(b.chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect())
    }

    pub fn write_u32s(&mut self, addr: u64, vals: &[u32]) -> Result<(), EmuError> {
        let bytes: Vec<u8> = vals.iter().flat_map(|v| v.to_le_bytes()).collect();
        self.write(addr, &bytes)
    }

    pub fn read_u32s(&self, addr: u64, n: usize) -> Result<Vec<u32>, EmuError> {
        let b = self.read(addr, n * 4)?;
        Ok(b.chunks_exact(4)
            .map(|c| u32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect())
    }

    pub fn write_u64s(&mut self, addr: u64, vals: &[u64]) -> Result<(), EmuError> {
        let bytes: Vec<u8> = vals.iter().flat_map(|v| v.to_le_bytes()).collect();
        self.write(addr, &bytes)
    }

    pub fn read_u64s(&self, addr: u64, n: usize) -> Result<Vec<u64>, EmuError> {
        let b = self.read(addr, n * 8)?;
        Ok(b.chunks_exact(8)
            .map(|c| u64::from_le_bytes(c.try_into().unwrap_or([0; 8])))
            .collect())
    }

    /// A device load of `bytes` (1, 2, 4 or 8) little-endian bytes; `None`
    /// when outside every allocation.
    pub(crate) fn load(&self, addr: u64, bytes: u64) -> Option<u64> {
        let (i, off) = self.locate(addr, bytes)?;
        let src = &self.allocs[i].data[off..off + bytes as usize];
        let mut buf = [0u8; 8];
        buf[..src.len()].copy_from_slice(src);
        Some(u64::from_le_bytes(buf))
    }

    /// A device store of the low `bytes` bytes of `v`; `None` when outside
    /// every allocation.
    pub(crate) fn store(&mut self, addr: u64, bytes: u64, v: u64) -> Option<()> {
        let (i, off) = self.locate(addr, bytes)?;
        let n = bytes as usize;
        self.allocs[i].data[off..off + n].copy_from_slice(&v.to_le_bytes()[..n]);
        Some(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn allocations_are_separate_and_checked() {
        let mut m = Memory::new();
        let a = m.alloc(16);
        let b = m.alloc(8);
        assert!(b >= a + 16 + 4096);
        assert_eq!(m.read(a, 16).unwrap(), vec![0; 16]);
        assert!(m.read(a, 17).is_err());
        assert!(m.read(a - 1, 1).is_err());
        assert!(m.load(a + 16, 1).is_none());
        assert!(m.store(b + 4, 4, 7).is_some());
        assert_eq!(m.read_u32s(b, 2).unwrap(), vec![0, 7]);
        assert!(m.load(u64::MAX, 8).is_none());
        let z = m.alloc(0);
        assert!(m.load(z, 1).is_none());
    }
}
