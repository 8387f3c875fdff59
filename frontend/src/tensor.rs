//! `TensorProto` to [`Tensor`]: inline typed fields, `raw_data`, and external data; large
//! tensors stay in their file, mapped (`mapped.rs`), until a kernel reads them.
//!
//! External data never reads outside the model's folder: absolute locations are refused,
//! and the resolved (canonical) path must stay under the canonical folder, which also
//! catches `..` and symlinks that lead out.

use crate::mapped::{MappedRange, ModelMap, RawData, MAP_AT_LEAST};
use crate::proto::TensorProto;
use half::{bf16, f16};
use kiln_ir::{DType, Elem, Tensor};
use prost::bytes::Bytes;
use std::collections::BTreeMap;
use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::path::{Component, Path, PathBuf};
use std::sync::Arc;

/// The kiln dtype of an ONNX `TensorProto.DataType` code.
pub(crate) fn dtype_of(code: i32) -> Result<DType, String> {
    Ok(match code {
        1 => DType::F32,
        2 => DType::U8,
        3 => DType::I8,
        4 => DType::U16,
        5 => DType::I16,
        6 => DType::I32,
        7 => DType::I64,
        9 => DType::Bool,
        10 => DType::F16,
        11 => DType::F64,
        12 => DType::U32,
        13 => DType::U64,
        16 => DType::BF16,
        8 => return Err("string tensors are not supported".into()),
        c => return Err(format!("unsupported element type {c}")),
    })
}

/// ONNX's 4-bit integer codes (UINT4 = 21, INT4 = 22): kiln keeps their values one per
/// byte, in u8 and i8, and the frontend remembers which values are 4-bit (for
/// `QuantizeLinear`'s saturation). Every other op sees a byte tensor.
pub(crate) fn four_bit(code: i32) -> Option<DType> {
    match code {
        21 => Some(DType::U8),
        22 => Some(DType::I8),
        _ => None,
    }
}

/// The dtype a value of ONNX type `code` is held in: [`dtype_of`], or the byte type of a
/// 4-bit one ([`four_bit`]).
pub(crate) fn storage_of(code: i32) -> Result<DType, String> {
    four_bit(code).map_or_else(|| dtype_of(code), Ok)
}

/// Where tensors' bytes come from beyond their proto's typed fields: `raw_data`, read in
/// place from the mapped model file when large, and external data files, opened once each.
///
/// An external tensor of at least [`MAP_AT_LEAST`] bytes gets a read-only map of its own
/// range of the file and is read in place, so once the compiled program packs a weight and
/// drops it, the map and its pages go. A smaller one is read piece by piece into memory of
/// its own. A tensor that cannot be read in place (misaligned for its element type, or
/// bool) is copied, and the model file's pages under it are handed back.
pub(crate) struct DataSource {
    base: Option<PathBuf>,
    files: BTreeMap<PathBuf, File>,
    model_map: Option<ModelMap>,
}

impl DataSource {
    /// A reader for locations relative to `base` (the model's folder).
    pub(crate) fn new(base: Option<&Path>) -> DataSource {
        DataSource {
            base: base.map(Path::to_path_buf),
            files: BTreeMap::new(),
            model_map: None,
        }
    }

    /// The same reader, told the map the model's `raw_data` slices point into.
    pub(crate) fn with_model_map(self, model_map: Option<ModelMap>) -> DataSource {
        DataSource { model_map, ..self }
    }

    /// A tensor from `raw_data`: read in place when large, else copied.
    fn raw(&self, raw: &Bytes, dtype: DType, shape: &[usize]) -> Result<Tensor, String> {
        if raw.len() < MAP_AT_LEAST {
            return Tensor::from_le_bytes(dtype, shape, raw).map_err(|e| e.to_string());
        }
        // A copy drops `RawData` at once, which hands the pages it read back to the file.
        let raw = Arc::new(RawData::new(raw.clone(), self.model_map.clone()));
        Tensor::from_stable_bytes(dtype, shape, raw, 0).map_err(|e| e.to_string())
    }

    /// The canonical path of `location`, checked to stay inside the base folder.
    fn resolve(&self, location: &str) -> Result<PathBuf, String> {
        let base = self
            .base
            .as_ref()
            .ok_or("external data needs the model's folder (load from a path)")?;
        let rel = Path::new(location);
        if rel.is_absolute()
            || rel.has_root()
            || rel.components().any(|c| matches!(c, Component::Prefix(_)))
        {
            return Err(format!("external data location `{location}` is absolute; only paths inside the model's folder are allowed"));
        }
        let mut depth = 0i32;
        for c in rel.components() {
            match c {
                Component::ParentDir => depth -= 1,
                Component::Normal(_) => depth += 1,
                _ => {}
            }
            if depth < 0 {
                return Err(format!(
                    "external data location `{location}` escapes the model's folder"
                ));
            }
        }
        let base = base
            .canonicalize()
            .map_err(|e| format!("model folder {}: {e}", base.display()))?;
        let full = base.join(rel);
        let canon = full
            .canonicalize()
            .map_err(|e| format!("external data file {}: {e}", full.display()))?;
        if !canon.starts_with(&base) {
            return Err(format!(
                "external data location `{location}` resolves outside the model's folder"
            ));
        }
        Ok(canon)
    }

    /// The file at `location`, positioned at `offset`, and the length of the range
    /// `[offset, offset + length)` (to the end without a length), checked to lie inside it.
    fn range(
        &mut self,
        location: &str,
        offset: u64,
        length: Option<u64>,
    ) -> Result<(&File, usize), String> {
        let path = self.resolve(location)?;
        if !self.files.contains_key(&path) {
            let file = File::open(&path).map_err(|e| format!("{}: {e}", path.display()))?;
            self.files.insert(path.clone(), file);
        }
        let mut file = &self.files[&path];
        let size = (file.metadata())
            .map_err(|e| format!("{}: {e}", path.display()))?
            .len();
        let end = match length {
            Some(l) => offset
                .checked_add(l)
                .ok_or("external data offset + length overflows")?,
            None => size,
        };
        if offset > size || end > size {
            return Err(format!(
                "external data [{offset}, {end}) is out of bounds of `{location}` ({size} bytes)"
            ));
        }
        let len = usize::try_from(end - offset).map_err(|_| "external data too large")?;
        file.seek(SeekFrom::Start(offset))
            .map_err(|e| format!("{}: {e}", path.display()))?;
        Ok((file, len))
    }

    /// A tensor of `dtype` and `shape` read from the range, which must hold exactly its bytes.
    fn tensor(
        &mut self,
        (location, offset, length): (&str, u64, Option<u64>),
        dtype: DType,
        shape: &[usize],
    ) -> Result<Tensor, String> {
        let (mut file, len) = self.range(location, offset, length)?;
        if len < MAP_AT_LEAST {
            return Tensor::from_le_pieces(dtype, shape, len, |buf| file.read_exact(buf))
                .map_err(|e| e.to_string());
        }
        // SAFETY: see `MappedRange`: the map is read-only, of a range checked to lie inside
        // the file.
        let map = unsafe {
            memmap2::MmapOptions::new()
                .offset(offset)
                .len(len)
                .map(file)
        }
        .map_err(|e| format!("mapping external data `{location}`: {e}"))?;
        Tensor::from_stable_bytes(dtype, shape, Arc::new(MappedRange(map)), 0)
            .map_err(|e| e.to_string())
    }
}

/// The shape of a tensor proto, checked non-negative.
fn shape_of(t: &TensorProto) -> Result<Vec<usize>, String> {
    t.dims
        .iter()
        .map(|&d| usize::try_from(d).map_err(|_| format!("negative dim {d}")))
        .collect()
}

/// Converts a `TensorProto`, reading external data through `ext`.
pub(crate) fn tensor_from_proto(t: &TensorProto, ext: &mut DataSource) -> Result<Tensor, String> {
    if let Some(dtype) = four_bit(t.data_type()) {
        return nibbles(t, ext, dtype);
    }
    let dtype = dtype_of(t.data_type())?;
    let shape = shape_of(t)?;
    if t.data_location == Some(1) {
        let kv = |k: &str| {
            t.external_data
                .iter()
                .find(|e| e.key() == k)
                .map(|e| e.value().to_string())
        };
        let location = kv("location").ok_or("external data without a location")?;
        let num = |k: &str| -> Result<Option<u64>, String> {
            kv(k)
                .map(|v| {
                    v.parse::<u64>()
                        .map_err(|_| format!("bad external data {k} `{v}`"))
                })
                .transpose()
        };
        let (offset, length) = (num("offset")?.unwrap_or(0), num("length")?);
        return ext.tensor((&location, offset, length), dtype, &shape);
    }
    if let Some(raw) = &t.raw_data {
        return ext.raw(raw, dtype, &shape);
    }
    typed_fields(t, dtype, &shape).map_err(|e| e.to_string())
}

/// A 4-bit tensor, two values per byte (the first in the low nibble) in `raw_data`,
/// external data or `int32_data` (one byte per entry), unpacked one value per byte
/// (sign-extended for INT4).
fn nibbles(t: &TensorProto, ext: &mut DataSource, dtype: DType) -> Result<Tensor, String> {
    let shape = shape_of(t)?;
    let len = shape.iter().try_fold(1usize, |n, &d| n.checked_mul(d));
    let len = len.ok_or("the element count overflows")?;
    let bytes: Vec<u8> = if t.data_location == Some(1) || t.raw_data.is_some() {
        let mut u = t.clone();
        u.data_type = Some(2);
        u.dims = vec![len.div_ceil(2) as i64];
        tensor_from_proto(&u, ext)?
            .to_i64_vec()
            .into_iter()
            .map(|b| b as u8)
            .collect()
    } else {
        t.int32_data.iter().map(|&b| b as u8).collect()
    };
    if bytes.len() != len.div_ceil(2) {
        return Err(format!("{} bytes for {len} 4-bit values", bytes.len()));
    }
    let nibble = |i: usize| (bytes[i / 2] >> (4 * (i % 2))) & 0x0F;
    let tensor = match dtype {
        DType::I8 => Tensor::from_vec(
            (0..len)
                .map(|i| ((nibble(i) << 4) as i8) >> 4)
                .collect::<Vec<i8>>(),
            &shape,
        ),
        _ => Tensor::from_vec((0..len).map(nibble).collect::<Vec<u8>>(), &shape),
    };
    tensor.map_err(|e| e.to_string())
}

fn typed_fields(
    t: &TensorProto,
    dtype: DType,
    shape: &[usize],
) -> Result<Tensor, kiln_ir::TensorError> {
    fn conv<S: Copy, T: Elem>(
        v: &[S],
        f: impl Fn(S) -> T,
        shape: &[usize],
    ) -> Result<Tensor, kiln_ir::TensorError> {
        Tensor::from_vec(v.iter().map(|&x| f(x)).collect::<Vec<T>>(), shape)
    }
    let i32s = &t.int32_data;
    match dtype {
        DType::F32 => conv(&t.float_data, |x| x, shape),
        DType::F64 => conv(&t.double_data, |x| x, shape),
        DType::I64 => conv(&t.int64_data, |x| x, shape),
        DType::U64 => conv(&t.uint64_data, |x| x, shape),
        DType::U32 => conv(&t.uint64_data, |x| x as u32, shape),
        DType::I32 => conv(i32s, |x| x, shape),
        DType::I16 => conv(i32s, |x| x as i16, shape),
        DType::U16 => conv(i32s, |x| x as u16, shape),
        DType::I8 => conv(i32s, |x| x as i8, shape),
        DType::U8 => conv(i32s, |x| x as u8, shape),
        DType::Bool => conv(i32s, |x| x != 0, shape),
        DType::F16 => conv(i32s, |x| f16::from_bits(x as u16), shape),
        DType::BF16 => conv(i32s, |x| bf16::from_bits(x as u16), shape),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn proto(code: i32) -> TensorProto {
        TensorProto {
            dims: vec![2],
            data_type: Some(code),
            ..Default::default()
        }
    }

    #[test]
    fn every_dtype_reads_from_raw_data_and_typed_fields() {
        for code in [1, 2, 3, 4, 5, 6, 7, 9, 10, 11, 12, 13, 16] {
            let dtype = dtype_of(code).unwrap();
            let expected = Tensor::full(dtype, &[2], 1.0).unwrap();
            let mut raw = proto(code);
            raw.raw_data = Some(expected.to_le_bytes().into());
            let mut ext = DataSource::new(None);
            assert_eq!(
                tensor_from_proto(&raw, &mut ext).unwrap(),
                expected,
                "{dtype} raw"
            );
            let mut typed = proto(code);
            match dtype {
                DType::F32 => typed.float_data = vec![1.0; 2],
                DType::F64 => typed.double_data = vec![1.0; 2],
                DType::I64 => typed.int64_data = vec![1; 2],
                DType::U32 | DType::U64 => typed.uint64_data = vec![1; 2],
                DType::F16 => typed.int32_data = vec![f16::ONE.to_bits() as i32; 2],
                DType::BF16 => typed.int32_data = vec![bf16::ONE.to_bits() as i32; 2],
                _ => typed.int32_data = vec![1; 2],
            }
            assert_eq!(
                tensor_from_proto(&typed, &mut ext).unwrap(),
                expected,
                "{dtype} typed"
            );
        }
    }

    #[test]
    fn four_bit_tensors_unpack_low_nibble_first() {
        let mut ext = DataSource::new(None);
        let mut t = proto(22);
        t.dims = vec![3];
        t.raw_data = Some(vec![0x8F, 0x07].into());
        let i4 = tensor_from_proto(&t, &mut ext).unwrap();
        assert_eq!(i4.dtype(), DType::I8);
        assert_eq!(i4.to_i64_vec(), [-1, -8, 7]);
        t.data_type = Some(21);
        t.raw_data = None;
        t.int32_data = vec![0x8F, 0x07];
        assert_eq!(
            tensor_from_proto(&t, &mut ext).unwrap().to_i64_vec(),
            [15, 8, 7]
        );
        // Three values need two bytes.
        t.int32_data = vec![0x8F];
        assert!(tensor_from_proto(&t, &mut ext).is_err());
    }

    #[test]
    fn wrong_counts_and_strings_are_errors() {
        let mut ext = DataSource::new(None);
        let mut t = proto(1);
        t.float_data = vec![1.0; 3];
        assert!(tensor_from_proto(&t, &mut ext).is_err());
        let mut huge = proto(1);
        huge.dims = vec![i64::MAX, i64::MAX];
        assert!(tensor_from_proto(&huge, &mut ext).is_err());
        assert!(tensor_from_proto(&proto(8), &mut ext)
            .unwrap_err()
            .contains("string"));
    }
}
