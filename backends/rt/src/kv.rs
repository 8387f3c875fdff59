//! The buffers of KV caches that compiled programs append to in place
//! (`kiln_kernel::cache`): `[batch, heads, capacity, depth]` f32, the first `len` rows of
//! each head valid.

use kiln_ir::Tensor;
use kiln_kernel::cache::{KvCache, SEQ_AXIS};
use ndarray::{ArrayView4, ArrayViewMut4, Ix4, ShapeBuilder};

/// One cache's memory and how many of its rows are valid.
pub struct KvBuffer {
    data: Vec<f32>,
    /// `[batch, heads, capacity, depth]`.
    dims: [usize; 4],
    len: usize,
}

/// Why a cache buffer could not be made.
#[derive(Debug, thiserror::Error)]
#[error("a KV cache of {elements} floats cannot be allocated")]
pub struct KvError {
    /// The floats asked for.
    pub elements: u128,
}

impl KvBuffer {
    /// An empty cache of `capacity` rows per head. Its memory is zeroed by the system
    /// (pages become resident as rows are written), and failure to get it is an error.
    pub fn new(
        batch: usize,
        heads: usize,
        capacity: usize,
        depth: usize,
    ) -> Result<KvBuffer, KvError> {
        let elements = (batch as u128) * (heads as u128) * (capacity as u128) * (depth as u128);
        let err = KvError { elements };
        let n = usize::try_from(elements).map_err(|_| KvError { elements })?;
        let layout = std::alloc::Layout::array::<f32>(n).map_err(|_| KvError { elements })?;
        let data = if n == 0 {
            Vec::new()
        } else {
            // SAFETY: the layout is non-zero-sized; a null result is handled.
            let ptr = unsafe { std::alloc::alloc_zeroed(layout) }.cast::<f32>();
            if ptr.is_null() {
                return Err(err);
            }
            // SAFETY: `ptr` was allocated by the global allocator with the layout of `n`
            // f32s, all zero (a valid f32).
            unsafe { Vec::from_raw_parts(ptr, n, n) }
        };
        Ok(KvBuffer {
            data,
            dims: [batch, heads, capacity, depth],
            len: 0,
        })
    }

    /// A cache of at least `capacity` rows holding `past` (`[batch, heads, rows, depth]`).
    pub fn holding(past: ArrayView4<'_, f32>, capacity: usize) -> Result<KvBuffer, KvError> {
        let [b, h, p, d] = [0, 1, 2, 3].map(|i| past.shape()[i]);
        let mut kv = KvBuffer::new(b, h, capacity.max(p), d)?;
        kv.len = p;
        kv.view_mut().assign(&past);
        Ok(kv)
    }

    /// The valid rows per head.
    pub fn len(&self) -> usize {
        self.len
    }

    /// True before any row is written.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The rows per head it holds.
    pub fn capacity(&self) -> usize {
        self.dims[2]
    }

    /// `[batch, heads, len, depth]`: the shape of the past it holds.
    pub fn past_shape(&self) -> Vec<usize> {
        let [b, h, _, d] = self.dims;
        vec![b, h, self.len, d]
    }

    /// `[batch, heads, capacity, depth]`.
    pub fn dims(&self) -> [usize; 4] {
        self.dims
    }

    /// Marks `rows` more rows valid (a program wrote them).
    ///
    /// # Panics
    /// If that passes the capacity: programs refuse such a run before writing.
    pub fn grow(&mut self, rows: usize) {
        assert!(
            self.len + rows <= self.capacity(),
            "a KV cache grew past its capacity"
        );
        self.len += rows;
    }

    /// Forgets every row (the memory stays, for the next generation).
    pub fn clear(&mut self) {
        self.len = 0;
    }

    /// The valid rows, `[batch, heads, len, depth]`, read through the capacity's strides.
    pub fn view(&self) -> ArrayView4<'_, f32> {
        let [b, h, c, d] = self.dims;
        let strides = (h * c * d, c * d, d, 1);
        ArrayView4::from_shape((b, h, self.len, d).strides(strides), &self.data)
            .expect("the valid rows lie inside the buffer")
    }

    /// The valid rows, writable.
    fn view_mut(&mut self) -> ArrayViewMut4<'_, f32> {
        let [b, h, c, d] = self.dims;
        let strides = (h * c * d, c * d, d, 1);
        ArrayViewMut4::from_shape((b, h, self.len, d).strides(strides), &mut self.data)
            .expect("the valid rows lie inside the buffer")
    }

    /// The memory, for a program's slot table.
    pub fn as_mut_ptr(&mut self) -> *mut u8 {
        self.data.as_mut_ptr().cast()
    }
}

/// Where a program's caches sit among its `inputs` graph inputs and its outputs: how a
/// run with cache buffers (the JIT's and an artifact's `run_cached`) splits and merges
/// them, one [`KvBuffer`] per cache, in the caches' order.
#[derive(Clone, Copy)]
pub struct Placement<'a> {
    /// The caches appended in place.
    pub caches: &'a [KvCache],
    /// How many inputs the graph has, the pasts included.
    pub inputs: usize,
    /// How many outputs the graph has, the presents included.
    pub outputs: usize,
}

impl Placement<'_> {
    /// The cache of graph input `i`, by its position among the caches.
    fn cache_of_input(&self, i: usize) -> Option<usize> {
        self.caches.iter().position(|c| c.input == i)
    }

    /// True when graph output `i` is a cache's present.
    pub fn is_present(&self, i: usize) -> bool {
        self.caches.iter().any(|c| c.output == i)
    }

    /// Every graph input's shape, the `given` inputs' (the others, in graph order)
    /// beside the pasts `buffers` hold, and the buffers' one capacity.
    pub fn shapes(
        &self,
        given: &[Tensor],
        buffers: &[KvBuffer],
    ) -> Result<(Vec<Vec<usize>>, usize), String> {
        let others = self.inputs - self.caches.len();
        if buffers.len() != self.caches.len() || given.len() != others {
            return Err(format!(
                "expected {others} inputs and {} KV caches, got {} and {}",
                self.caches.len(),
                given.len(),
                buffers.len()
            ));
        }
        let capacity = buffers.first().map_or(0, KvBuffer::capacity);
        if buffers.iter().any(|kv| kv.capacity() != capacity) {
            return Err("the KV caches differ in capacity".into());
        }
        let mut given = given.iter();
        let shapes = (0..self.inputs)
            .map(|i| match self.cache_of_input(i) {
                Some(j) => buffers[j].past_shape(),
                None => given.next().expect("counted above").shape().to_vec(),
            })
            .collect();
        Ok((shapes, capacity))
    }

    /// The slot-table pointer of every graph input: a cache's buffer, or a given input
    /// (contiguous, counted by [`Placement::shapes`]).
    pub fn pointers(&self, given: &[Tensor], buffers: &mut [KvBuffer]) -> Vec<*mut u8> {
        let mut given = given.iter();
        let caches: Vec<*mut u8> = buffers.iter_mut().map(KvBuffer::as_mut_ptr).collect();
        (0..self.inputs)
            .map(|i| match self.cache_of_input(i) {
                Some(j) => caches[j],
                None => {
                    let t = given.next().expect("counted");
                    kiln_ir::dispatch!(t, a => a.as_ptr() as *mut u8)
                }
            })
            .collect()
    }

    /// After a run: each buffer holds as many rows as its present, whose shape
    /// `present_shape` gives from a graph output's index.
    pub fn grow<'s>(&self, buffers: &mut [KvBuffer], present_shape: impl Fn(usize) -> &'s [usize]) {
        for (c, kv) in self.caches.iter().zip(buffers) {
            kv.grow(present_shape(c.output)[SEQ_AXIS] - kv.len());
        }
    }

    /// The inputs that are not pasts, in order.
    pub fn given<T>(&self, inputs: Vec<T>) -> Vec<T> {
        (inputs.into_iter().enumerate())
            .filter(|(i, _)| self.cache_of_input(*i).is_none())
            .map(|(_, t)| t)
            .collect()
    }

    /// The outputs that are not presents, in order.
    pub fn others<T>(&self, outputs: Vec<T>) -> Vec<T> {
        (outputs.into_iter().enumerate())
            .filter(|(i, _)| !self.is_present(*i))
            .map(|(_, t)| t)
            .collect()
    }

    /// An ordinary run (every input a tensor, every output one) through `run_cached`:
    /// each past copied into a buffer of `capacity` rows, each present read back out.
    pub fn run_through<E>(
        &self,
        inputs: &[Tensor],
        capacity: usize,
        bad: impl Fn(String) -> E,
        run_cached: impl FnOnce(&[Tensor], &mut [KvBuffer]) -> Result<Vec<Tensor>, E>,
    ) -> Result<Vec<Tensor>, E> {
        let mut buffers = Vec::with_capacity(self.caches.len());
        for c in self.caches {
            let past = (inputs.get(c.input).and_then(|t| t.as_array::<f32>()))
                .and_then(|a| a.into_dimensionality::<Ix4>().ok())
                .ok_or_else(|| bad("a KV cache input is not f32 of rank 4".into()))?;
            buffers.push(KvBuffer::holding(past, capacity).map_err(|e| bad(e.to_string()))?);
        }
        let others = self.given(inputs.to_vec());
        let mut rest = run_cached(&others, &mut buffers)?.into_iter();
        (0..self.outputs)
            .map(|i| match self.caches.iter().position(|c| c.output == i) {
                Some(j) => Ok(Tensor::from_array(buffers[j].view().to_owned().into_dyn())),
                None => rest
                    .next()
                    .ok_or_else(|| bad("an output is missing".into())),
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cache_starts_empty_and_views_its_valid_rows() {
        let mut kv = KvBuffer::new(1, 2, 4, 3).unwrap();
        assert_eq!(
            (kv.len(), kv.capacity(), kv.past_shape()),
            (0, 4, vec![1, 2, 0, 3])
        );
        // SAFETY: 24 floats; row 0 of head 1 is floats 12..15.
        unsafe { *kv.as_mut_ptr().cast::<f32>().add(12) = 7.0 };
        kv.grow(1);
        let v = kv.view();
        assert_eq!(v.shape(), &[1, 2, 1, 3]);
        assert_eq!(v[[0, 1, 0, 0]], 7.0);
        assert!(KvBuffer::new(usize::MAX, 2, 2, 2).is_err());
        let held = KvBuffer::holding(v, 3).unwrap();
        assert_eq!((held.len(), held.capacity()), (1, 3));
        assert_eq!(held.view(), kv.view());
    }
}
