//! Read-only maps of model files, so that large tensors are read in place instead of
//! copied: the import touches none of their pages, and a pass or kernel faults in only what
//! it reads (one row of a vocabulary table per token).
//!
//! Every map here trusts its file not to be changed or truncated by another process while
//! the model lives, which no map can prevent; runtimes that map weights all do the same.

use kiln_ir::StableBytes;
use prost::bytes::Bytes;
use std::fs::File;
use std::path::Path;
use std::sync::Arc;

/// The smallest tensor, in bytes, that is read in place rather than copied, and the
/// smallest model file that is mapped rather than read: below it, a map's page rounding and
/// its kernel bookkeeping cost more than the copy.
pub(crate) const MAP_AT_LEAST: usize = 1 << 20;

/// A read-only map of one tensor's range of an external data file.
pub(crate) struct MappedRange(pub(crate) memmap2::Mmap);

// SAFETY: the map is read-only and never remapped, so its bytes keep their address while it
// lives (see the module comment for the file itself).
unsafe impl StableBytes for MappedRange {
    fn bytes(&self) -> &[u8] {
        &self.0
    }
}

/// A tensor's `raw_data`: a slice of the mapped model file (`map`), or of a decoded copy.
/// When the last tensor reading it goes (its weight packed, or copied because it could not
/// be read in place), the map's pages under it are handed back: the map itself lives on
/// while any other tensor reads from it, and would otherwise keep every page it touched.
pub(crate) struct RawData {
    bytes: Bytes,
    map: Option<ModelMap>,
}

impl RawData {
    /// `bytes`, which lie in `map` when there is one.
    pub(crate) fn new(bytes: Bytes, map: Option<ModelMap>) -> RawData {
        RawData { bytes, map }
    }
}

impl Drop for RawData {
    fn drop(&mut self) {
        if let Some(map) = &self.map {
            map.release(&self.bytes);
        }
    }
}

// SAFETY: `Bytes` is immutable and its data does not move while any handle to it lives;
// this one is never turned back into a mutable buffer.
unsafe impl StableBytes for RawData {
    fn bytes(&self) -> &[u8] {
        &self.bytes
    }
}

/// The whole model file, mapped: what the decoded model's `raw_data` slices point into.
#[derive(Clone)]
pub(crate) struct ModelMap(Arc<memmap2::Mmap>);

impl AsRef<[u8]> for ModelMap {
    fn as_ref(&self) -> &[u8] {
        &self.0
    }
}

impl ModelMap {
    /// Hands back the pages under `bytes`, when they lie in this map, once nothing reads
    /// them (their contents copied elsewhere, or packed): only what is still read stays
    /// resident. They are only unmapped from this process, never changed; a later read
    /// faults them in again from the file, so a neighbouring tensor that shares an edge
    /// page reads the same bytes. A failed advice only leaves the pages resident.
    pub(crate) fn release(&self, bytes: &[u8]) {
        let map = self.0.as_ptr() as usize;
        let Some(offset) = (bytes.as_ptr() as usize).checked_sub(map) else {
            return;
        };
        if offset + bytes.len() > self.0.len() {
            return;
        }
        #[cfg(not(unix))]
        let _ = offset; // no advice to give: the pages stay until the map goes
        #[cfg(unix)]
        // SAFETY: a read-only shared file map: MADV_DONTNEED drops the pages from this
        // process, and any later access reads the file's unchanged bytes again, so no
        // reference into the map sees different data. The range lies inside the map.
        let _ = unsafe {
            self.0
                .unchecked_advise_range(memmap2::UncheckedAdvice::DontNeed, offset, bytes.len())
        };
    }
}

/// The bytes of the model file at `path`: a read-only map when it is large (a model with
/// its weights inline), else read into memory; and the map, if any.
pub(crate) fn open_model(path: &Path) -> std::io::Result<(Bytes, Option<ModelMap>)> {
    let file = File::open(path)?;
    let len = file.metadata()?.len();
    if len < MAP_AT_LEAST as u64 {
        return Ok((Bytes::from(std::fs::read(path)?), None));
    }
    // SAFETY: a read-only map; see the module comment.
    let map = ModelMap(Arc::new(unsafe { memmap2::Mmap::map(&file) }?));
    Ok((Bytes::from_owner(map.clone()), Some(map)))
}
