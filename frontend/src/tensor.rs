//! `TensorProto` to [`Tensor`]: inline typed fields, `raw_data`, and external data read
//! through one memory map per file.
//!
//! External data never reads outside the model's folder: absolute locations are refused,
//! and the resolved (canonical) path must stay under the canonical folder, which also
//! catches `..` and symlinks that lead out.

use crate::proto::TensorProto;
use half::{bf16, f16};
use kiln_ir::{DType, Elem, Tensor};
use memmap2::Mmap;
use std::collections::BTreeMap;
use std::path::{Component, Path, PathBuf};

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

/// Reads external data files, mapping each file once.
pub(crate) struct ExternalData {
    base: Option<PathBuf>,
    maps: BTreeMap<PathBuf, Mmap>,
}

impl ExternalData {
    /// A reader for locations relative to `base` (the model's folder).
    pub(crate) fn new(base: Option<&Path>) -> ExternalData {
        ExternalData {
            base: base.map(Path::to_path_buf),
            maps: BTreeMap::new(),
        }
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

    /// The bytes `[offset, offset + length)` of `location` (to the end without a length).
    fn bytes(&mut self, location: &str, offset: u64, length: Option<u64>) -> Result<&[u8], String> {
        let path = self.resolve(location)?;
        if !self.maps.contains_key(&path) {
            let file =
                std::fs::File::open(&path).map_err(|e| format!("{}: {e}", path.display()))?;
            // SAFETY: the map is read-only; like every mmap user we accept that another
            // process truncating the file while we read is outside our control.
            let map =
                unsafe { Mmap::map(&file) }.map_err(|e| format!("{}: {e}", path.display()))?;
            self.maps.insert(path.clone(), map);
        }
        let map = &self.maps[&path];
        let size = map.len() as u64;
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
        Ok(&map[offset as usize..end as usize])
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
pub(crate) fn tensor_from_proto(t: &TensorProto, ext: &mut ExternalData) -> Result<Tensor, String> {
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
        let bytes = ext.bytes(&location, offset, length)?;
        return Tensor::from_le_bytes(dtype, &shape, bytes).map_err(|e| e.to_string());
    }
    if let Some(raw) = &t.raw_data {
        return Tensor::from_le_bytes(dtype, &shape, raw).map_err(|e| e.to_string());
    }
    typed_fields(t, dtype, &shape).map_err(|e| e.to_string())
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
