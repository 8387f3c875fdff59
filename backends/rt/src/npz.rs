//! `.npy` and `.npz` files to and from [`Tensor`]s, through `ndarray-npy`.
//!
//! numpy has no dtype for the element type of a file until its header is read, and
//! `ndarray-npy` reads one Rust type at a time, so reading tries each dtype kiln knows in turn
//! and keeps the one whose descriptor matches. f16 goes through a small bit-pattern newtype
//! (numpy's `<f2`); bf16 has no numpy dtype, so writing it is an error that says so.

use half::f16;
use kiln_ir::{DType, Elem, MemoryLimit, Tensor};
use ndarray::ArrayD;
use ndarray_npy::{
    NpzReader, NpzWriter, ReadDataError, ReadNpyError, ReadNpzError, ReadableElement,
    WritableElement, WriteDataError,
};
use py_literal::Value as PyValue;
use std::fs::File;
use std::io::{BufReader, BufWriter, Read, Seek, Write};
use std::path::{Path, PathBuf};

/// A failure reading or writing an `.npy`/`.npz` file; the user's file is at fault unless the
/// message says otherwise.
#[derive(Debug, thiserror::Error)]
#[error("{}{}: {message}", file.display(), array.as_ref().map(|a| format!(": array `{a}`")).unwrap_or_default())]
pub struct NpyError {
    /// The file.
    pub file: PathBuf,
    /// The array inside an `.npz`, when the error concerns one.
    pub array: Option<String>,
    /// What went wrong.
    pub message: String,
}

impl NpyError {
    fn new(file: &Path, array: Option<&str>, message: impl ToString) -> NpyError {
        NpyError {
            file: file.to_path_buf(),
            array: array.map(str::to_string),
            message: message.to_string(),
        }
    }
}

/// Reads every array of an `.npz` file, in the archive's order, under the default memory
/// limit ([`MemoryLimit::default`]).
pub fn read_npz(path: &Path) -> Result<Vec<(String, Tensor)>, NpyError> {
    read_npz_with(path, MemoryLimit::default())
}

/// Reads every array of an `.npz` file, in the archive's order. Each array's header is read
/// first: the size it declares must fit in the entry and under `limit` before anything is
/// allocated.
pub fn read_npz_with(path: &Path, limit: MemoryLimit) -> Result<Vec<(String, Tensor)>, NpyError> {
    check_npz_headers(path, limit)?;
    let file = File::open(path).map_err(|e| NpyError::new(path, None, e))?;
    read_npz_from(BufReader::new(file), path)
}

/// [`read_npz`] from any reader (`path` only names it in errors).
pub fn read_npz_from<R: Read + Seek>(
    reader: R,
    path: &Path,
) -> Result<Vec<(String, Tensor)>, NpyError> {
    let mut npz = NpzReader::new(reader).map_err(|e| NpyError::new(path, None, npz_message(&e)))?;
    let names = npz
        .names()
        .map_err(|e| NpyError::new(path, None, npz_message(&e)))?;
    let mut out = Vec::with_capacity(names.len());
    for name in names {
        let mut source = NpzEntry {
            npz: &mut npz,
            name: &name,
        };
        let t = read_tensor(&mut source).map_err(|m| NpyError::new(path, Some(&name), m))?;
        out.push((name, t));
    }
    Ok(out)
}

/// Reads one `.npy` file; its header must declare a size that fits in the file and under
/// the default memory limit.
pub fn read_npy(path: &Path) -> Result<Tensor, NpyError> {
    let fail = |m: String| NpyError::new(path, None, m);
    let file = File::open(path).map_err(|e| fail(e.to_string()))?;
    let stored = file.metadata().map_err(|e| fail(e.to_string()))?.len();
    check_header(BufReader::new(file), stored, MemoryLimit::default()).map_err(fail)?;
    read_tensor(&mut NpyFile { path }).map_err(|m| NpyError::new(path, None, m))
}

/// Writes arrays to an `.npz` file (uncompressed), replacing it.
pub fn write_npz(path: &Path, tensors: &[(String, Tensor)]) -> Result<(), NpyError> {
    let file = File::create(path).map_err(|e| NpyError::new(path, None, e))?;
    write_npz_to(BufWriter::new(file), tensors, path)
}

/// [`write_npz`] to any writer (`path` only names it in errors).
pub fn write_npz_to<W: Write + Seek>(
    writer: W,
    tensors: &[(String, Tensor)],
    path: &Path,
) -> Result<(), NpyError> {
    let mut npz = NpzWriter::new(writer);
    for (name, t) in tensors {
        write_npz_entry(&mut npz, name, t).map_err(|m| NpyError::new(path, Some(name), m))?;
    }
    let mut w = npz.finish().map_err(|e| NpyError::new(path, None, e))?;
    w.flush().map_err(|e| NpyError::new(path, None, e))
}

/// Writes one `.npy` file, replacing it.
pub fn write_npy(path: &Path, t: &Tensor) -> Result<(), NpyError> {
    use ndarray_npy::WriteNpyExt;
    let file = File::create(path).map_err(|e| NpyError::new(path, None, e))?;
    let mut w = BufWriter::new(file);
    let written = match t {
        Tensor::F32(a) => a.view().write_npy(&mut w),
        Tensor::F16(a) => a.view().map(|x| F16Bits(x.to_bits())).write_npy(&mut w),
        Tensor::BF16(_) => return Err(NpyError::new(path, None, BF16_UNSUPPORTED)),
        Tensor::F64(a) => a.view().write_npy(&mut w),
        Tensor::I8(a) => a.view().write_npy(&mut w),
        Tensor::U8(a) => a.view().write_npy(&mut w),
        Tensor::I16(a) => a.view().write_npy(&mut w),
        Tensor::U16(a) => a.view().write_npy(&mut w),
        Tensor::I32(a) => a.view().write_npy(&mut w),
        Tensor::U32(a) => a.view().write_npy(&mut w),
        Tensor::I64(a) => a.view().write_npy(&mut w),
        Tensor::U64(a) => a.view().write_npy(&mut w),
        Tensor::Bool(a) => a.view().write_npy(&mut w),
    };
    written.map_err(|e| NpyError::new(path, None, e))?;
    w.flush().map_err(|e| NpyError::new(path, None, e))
}

const BF16_UNSUPPORTED: &str = "bf16 has no numpy dtype; cast the tensor to f32 before saving it";

fn write_npz_entry<W: Write + Seek>(
    npz: &mut NpzWriter<W>,
    name: &str,
    t: &Tensor,
) -> Result<(), String> {
    let written = match t {
        Tensor::F32(a) => npz.add_array(name, &a.view()),
        Tensor::F16(a) => npz.add_array(name, &a.view().map(|x| F16Bits(x.to_bits()))),
        Tensor::BF16(_) => return Err(BF16_UNSUPPORTED.to_string()),
        Tensor::F64(a) => npz.add_array(name, &a.view()),
        Tensor::I8(a) => npz.add_array(name, &a.view()),
        Tensor::U8(a) => npz.add_array(name, &a.view()),
        Tensor::I16(a) => npz.add_array(name, &a.view()),
        Tensor::U16(a) => npz.add_array(name, &a.view()),
        Tensor::I32(a) => npz.add_array(name, &a.view()),
        Tensor::U32(a) => npz.add_array(name, &a.view()),
        Tensor::I64(a) => npz.add_array(name, &a.view()),
        Tensor::U64(a) => npz.add_array(name, &a.view()),
        Tensor::Bool(a) => npz.add_array(name, &a.view()),
    };
    written.map_err(|e| e.to_string())
}

/// Checks the header of every entry of an `.npz` (see [`check_header`]).
fn check_npz_headers(path: &Path, limit: MemoryLimit) -> Result<(), NpyError> {
    let file = File::open(path).map_err(|e| NpyError::new(path, None, e))?;
    let Ok(mut zip) = zip::ZipArchive::new(BufReader::new(file)) else {
        // Not a zip: reading it reports that.
        return Ok(());
    };
    for i in 0..zip.len() {
        let Ok(entry) = zip.by_index(i) else {
            continue;
        };
        let name = entry.name().to_string();
        let name = name.strip_suffix(".npy").unwrap_or(&name).to_string();
        let stored = entry.size();
        check_header(entry, stored, limit).map_err(|m| NpyError::new(path, Some(&name), m))?;
    }
    Ok(())
}

/// Reads an `.npy` header from `r` (which holds `stored` bytes in all) and checks that the
/// data it declares fits in what is stored and under `limit`, so that a header claiming a
/// huge shape is an error before anything is allocated. Headers it cannot make sense of
/// are left to the reader, which reports them.
fn check_header(mut r: impl Read, stored: u64, limit: MemoryLimit) -> Result<(), String> {
    let mut start = [0u8; 10];
    if r.read_exact(&mut start).is_err() || &start[..6] != b"\x93NUMPY" {
        return Ok(());
    }
    let (len, prefix) = if start[6] == 1 {
        (u16::from_le_bytes([start[8], start[9]]) as u64, 10)
    } else {
        let mut more = [0u8; 2];
        if r.read_exact(&mut more).is_err() {
            return Ok(());
        }
        (
            u32::from_le_bytes([start[8], start[9], more[0], more[1]]) as u64,
            12,
        )
    };
    if len > 1 << 20 {
        return Err(format!("the .npy header is {len} bytes long"));
    }
    let mut header = vec![0u8; len as usize];
    if r.read_exact(&mut header).is_err() {
        return Ok(());
    }
    let Some((shape, item)) = header_shape(&header) else {
        return Ok(());
    };
    let bytes = shape
        .iter()
        .try_fold(item as u128, |n, &d| n.checked_mul(d as u128));
    let data = stored.saturating_sub(prefix + len) as u128;
    if bytes.is_none_or(|b| b > data) {
        return Err(format!(
            "the header declares shape {shape:?} of {item}-byte elements ({}), but the file holds {} of data",
            bytes.map_or("more than 2^128 bytes".to_string(), kiln_ir::human_bytes),
            kiln_ir::human_bytes(data)
        ));
    }
    kiln_ir::check_bytes(|| format!("shape {shape:?}"), bytes, limit).map_err(|e| e.to_string())
}

/// The shape and element size an `.npy` header declares.
fn header_shape(header: &[u8]) -> Option<(Vec<u64>, u64)> {
    let text = std::str::from_utf8(header).ok()?;
    let PyValue::Dict(entries) = text.trim().parse::<PyValue>().ok()? else {
        return None;
    };
    let field = |key: &str| {
        entries
            .iter()
            .find(|(k, _)| matches!(k, PyValue::String(s) if s == key))
            .map(|(_, v)| v)
    };
    let PyValue::Tuple(dims) = field("shape")? else {
        return None;
    };
    let shape = dims
        .iter()
        .map(|d| match d {
            PyValue::Integer(n) => u64::try_from(n).ok(),
            _ => None,
        })
        .collect::<Option<Vec<u64>>>()?;
    let PyValue::String(descr) = field("descr")? else {
        return None;
    };
    let digits: String = descr.chars().skip_while(|c| !c.is_ascii_digit()).collect();
    Some((shape, digits.parse().ok()?))
}

/// Why one typed read attempt failed.
enum Attempt {
    /// The stored dtype is another one; try the next.
    WrongType(PyValue),
    /// A real error.
    Failed(String),
}

/// Somewhere one array can be read from, once per attempted element type.
trait Source {
    fn read<T: ReadableElement>(&mut self) -> Result<ArrayD<T>, Attempt>;
}

struct NpzEntry<'a, R: Read + std::io::Seek> {
    npz: &'a mut NpzReader<R>,
    name: &'a str,
}

impl<R: Read + std::io::Seek> Source for NpzEntry<'_, R> {
    fn read<T: ReadableElement>(&mut self) -> Result<ArrayD<T>, Attempt> {
        self.npz.by_name(self.name).map_err(|e| match e {
            ReadNpzError::Npy(e) => classify(e),
            e => Attempt::Failed(npz_message(&e)),
        })
    }
}

struct NpyFile<'a> {
    path: &'a Path,
}

impl Source for NpyFile<'_> {
    fn read<T: ReadableElement>(&mut self) -> Result<ArrayD<T>, Attempt> {
        ndarray_npy::read_npy(self.path).map_err(classify)
    }
}

fn classify(e: ReadNpyError) -> Attempt {
    match e {
        ReadNpyError::WrongDescriptor(d) => Attempt::WrongType(d),
        e => Attempt::Failed(e.to_string()),
    }
}

fn npz_message(e: &ReadNpzError) -> String {
    match e {
        ReadNpzError::Zip(z) => format!("not a readable .npz archive ({z})"),
        ReadNpzError::Npy(n) => n.to_string(),
    }
}

/// Reads with each dtype in turn until the descriptor matches.
fn read_tensor(src: &mut impl Source) -> Result<Tensor, String> {
    macro_rules! attempt {
        ($t:ty) => {
            match src.read::<$t>() {
                Ok(a) => return Ok(standard::<$t>(a)),
                Err(Attempt::Failed(m)) => return Err(m),
                Err(Attempt::WrongType(_)) => {}
            }
        };
    }
    attempt!(f32);
    attempt!(f64);
    attempt!(i64);
    attempt!(i32);
    attempt!(i16);
    attempt!(i8);
    attempt!(u8);
    attempt!(u16);
    attempt!(u32);
    attempt!(u64);
    attempt!(bool);
    match src.read::<F16Bits>() {
        Ok(a) => Ok(Tensor::from_array(a.mapv(|b| f16::from_bits(b.0)))),
        Err(Attempt::Failed(m)) => Err(m),
        Err(Attempt::WrongType(d)) => Err(format!(
            "numpy dtype {d} is not supported (kiln reads bool, ints, f16, f32, f64)"
        )),
    }
}

fn standard<T: Elem>(a: ArrayD<T>) -> Tensor {
    Tensor::from_array(a.as_standard_layout().into_owned())
}

/// An f16 as its bits, so that `ndarray-npy` can move it as numpy's `<f2`.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
struct F16Bits(u16);

const F16_DESCR: &str = "<f2";

impl WritableElement for F16Bits {
    fn type_descriptor() -> PyValue {
        PyValue::String(F16_DESCR.into())
    }

    fn write<W: Write>(&self, mut writer: W) -> Result<(), WriteDataError> {
        writer
            .write_all(&self.0.to_le_bytes())
            .map_err(WriteDataError::from)
    }

    fn write_slice<W: Write>(slice: &[Self], mut writer: W) -> Result<(), WriteDataError> {
        let bytes: Vec<u8> = slice.iter().flat_map(|x| x.0.to_le_bytes()).collect();
        writer.write_all(&bytes).map_err(WriteDataError::from)
    }
}

impl ReadableElement for F16Bits {
    fn read_to_end_exact_vec<R: Read>(
        mut reader: R,
        type_desc: &PyValue,
        len: usize,
    ) -> Result<Vec<Self>, ReadDataError> {
        if !matches!(type_desc, PyValue::String(s) if s == F16_DESCR) {
            return Err(ReadDataError::WrongDescriptor(type_desc.clone()));
        }
        let mut bytes = Vec::new();
        reader.read_to_end(&mut bytes)?;
        let want = len.checked_mul(2).ok_or(ReadDataError::MissingData)?;
        match bytes.len().cmp(&want) {
            std::cmp::Ordering::Less => Err(ReadDataError::MissingData),
            std::cmp::Ordering::Greater => Err(ReadDataError::ExtraBytes(bytes.len() - want)),
            std::cmp::Ordering::Equal => Ok(bytes
                .chunks_exact(2)
                .map(|c| F16Bits(u16::from_le_bytes([c[0], c[1]])))
                .collect()),
        }
    }
}

/// The dtypes that survive a round trip through `.npy`.
pub fn npy_dtypes() -> impl Iterator<Item = DType> {
    DType::ALL.into_iter().filter(|d| *d != DType::BF16)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(d: DType) -> Tensor {
        Tensor::from_vec(vec![0.0f64, 1.0, -2.5, 3.0, 100.0, 7.0], &[2, 3])
            .unwrap()
            .cast(d)
    }

    #[test]
    fn npz_round_trips_every_numpy_dtype() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("all.npz");
        let tensors: Vec<(String, Tensor)> = npy_dtypes()
            .map(|d| (format!("x_{d}"), sample(d)))
            .collect();
        write_npz(&path, &tensors).unwrap();
        assert_eq!(read_npz(&path).unwrap(), tensors);
    }

    #[test]
    fn npy_round_trips_f16_and_scalars() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("h.npy");
        for t in [
            sample(DType::F16),
            Tensor::scalar(3i64),
            Tensor::from_vec(Vec::<f32>::new(), &[0, 4]).unwrap(),
        ] {
            write_npy(&path, &t).unwrap();
            assert_eq!(read_npy(&path).unwrap(), t);
        }
    }

    #[test]
    fn bf16_is_refused_with_the_array_name() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("b.npz");
        let err = write_npz(&path, &[("w".into(), sample(DType::BF16))]).unwrap_err();
        let msg = err.to_string();
        assert!(
            msg.contains("b.npz") && msg.contains("`w`") && msg.contains("bf16"),
            "{msg}"
        );
    }

    #[test]
    fn garbage_names_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("junk.npz");
        std::fs::write(&path, b"definitely not a zip").unwrap();
        let msg = read_npz(&path).unwrap_err().to_string();
        assert!(msg.starts_with(&path.display().to_string()), "{msg}");
        let missing = read_npy(&dir.path().join("nope.npy"))
            .unwrap_err()
            .to_string();
        assert!(missing.contains("nope.npy"), "{missing}");
    }
}
