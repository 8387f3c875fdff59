//! Memory limits: every tensor, constant and arena is sized with checked arithmetic and
//! compared with a [`MemoryLimit`] before it is allocated, so an oversized model is an error
//! that names the node, never an abort or a wrapped size.
//!
//! The limit is a value passed through options (the interpreter's [`RunOptions`], the CPU
//! backend's and the runtime's); [`MemoryLimit::default`] derives it from the machine.
//!
//! [`RunOptions`]: crate::interp::RunOptions

use crate::{Bindings, DType, Dim, Graph, Node, TensorType};
use std::fmt;
use std::str::FromStr;

/// The most bytes one tensor, constant or arena may take.
///
/// ```
/// use kiln_ir::MemoryLimit;
/// let l: MemoryLimit = "512MiB".parse().unwrap();
/// assert_eq!(l.bytes(), 512 << 20);
/// assert_eq!(l.to_string(), "512 MiB");
/// assert!(l.allows(1000) && !l.allows(1 << 30));
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct MemoryLimit(u64);

impl MemoryLimit {
    /// The limit when the machine's memory cannot be read: 8 GiB.
    pub const FALLBACK: MemoryLimit = MemoryLimit(8 << 30);

    /// A limit of `bytes`.
    pub fn new(bytes: u64) -> MemoryLimit {
        MemoryLimit(bytes)
    }

    /// The limit in bytes.
    pub fn bytes(self) -> u64 {
        self.0
    }

    /// True when `bytes` fit under the limit.
    pub fn allows(self, bytes: u128) -> bool {
        bytes <= self.0 as u128
    }

    /// 80% of the machine's memory (`MemTotal` in `/proc/meminfo`), or [`Self::FALLBACK`]
    /// where that cannot be read.
    pub fn from_machine() -> MemoryLimit {
        std::fs::read_to_string("/proc/meminfo")
            .ok()
            .and_then(|s| mem_total(&s))
            .map_or(MemoryLimit::FALLBACK, |total| {
                MemoryLimit((total as u128 * 4 / 5) as u64)
            })
    }
}

/// `MemTotal` in bytes from the text of `/proc/meminfo`.
fn mem_total(meminfo: &str) -> Option<u64> {
    let line = meminfo.lines().find(|l| l.starts_with("MemTotal:"))?;
    let mut words = line["MemTotal:".len()..].split_whitespace();
    let n: u64 = words.next()?.parse().ok()?;
    match words.next() {
        Some("kB") => n.checked_mul(1024),
        None => Some(n),
        Some(_) => None,
    }
}

impl Default for MemoryLimit {
    /// [`MemoryLimit::from_machine`].
    fn default() -> MemoryLimit {
        MemoryLimit::from_machine()
    }
}

impl fmt::Display for MemoryLimit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&human_bytes(self.0 as u128))
    }
}

/// Why a memory size did not parse.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("bad memory size `{0}`: expected bytes, optionally with a suffix such as 512M, 8G or 2GiB")]
pub struct BadMemorySize(String);

impl FromStr for MemoryLimit {
    type Err = BadMemorySize;

    /// Bytes, with an optional suffix: `K`, `M`, `G`, `T` (and `KiB`… or `KB`…, all
    /// powers of 1024) or `B`.
    fn from_str(s: &str) -> Result<MemoryLimit, BadMemorySize> {
        let bad = || BadMemorySize(s.to_string());
        let t = s.trim();
        let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
        let (digits, suffix) = t.split_at(split);
        let n: u64 = digits.parse().map_err(|_| bad())?;
        let shift = match suffix.trim().to_ascii_lowercase().as_str() {
            "" | "b" => 0,
            "k" | "kb" | "kib" => 10,
            "m" | "mb" | "mib" => 20,
            "g" | "gb" | "gib" => 30,
            "t" | "tb" | "tib" => 40,
            _ => return Err(bad()),
        };
        n.checked_mul(1 << shift).map(MemoryLimit).ok_or_else(bad)
    }
}

/// A byte count in binary units with one decimal: `512 B`, `1.5 KiB`, `19.2 GiB`, `16 EiB`.
///
/// ```
/// assert_eq!(kiln_ir::human_bytes(1 << 64), "16 EiB");
/// assert_eq!(kiln_ir::human_bytes(3 << 29), "1.5 GiB");
/// ```
pub fn human_bytes(bytes: u128) -> String {
    const UNITS: [&str; 9] = ["B", "KiB", "MiB", "GiB", "TiB", "PiB", "EiB", "ZiB", "YiB"];
    let mut unit = 0;
    while unit + 1 < UNITS.len() && bytes >= 1u128 << (10 * (unit + 1)) {
        unit += 1;
    }
    if unit == 0 {
        return format!("{bytes} B");
    }
    let v = bytes as f64 / (1u128 << (10 * unit)) as f64;
    let s = format!("{v:.1}");
    let s = s.strip_suffix(".0").unwrap_or(&s);
    format!("{s} {}", UNITS[unit])
}

/// A byte count for messages: human units, then the exact count (`16 EiB
/// (18446744073709551616 bytes)`).
fn need(bytes: Option<u128>) -> String {
    match bytes {
        Some(b) if b < 1024 => human_bytes(b),
        Some(b) => format!("{} ({b} bytes)", human_bytes(b)),
        None => "more than 2^128 bytes".to_string(),
    }
}

/// Bytes of a tensor of `dtype` and `shape`; `None` when the count overflows u128.
pub fn tensor_bytes(dtype: DType, shape: &[usize]) -> Option<u128> {
    shape
        .iter()
        .try_fold(dtype.size_bytes() as u128, |n, &d| n.checked_mul(d as u128))
}

/// A size check that failed.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum SizeError {
    /// Something needs more memory than the limit allows.
    #[error("{what} needs {}, over the limit of {limit}", need(*bytes))]
    OverLimit {
        /// What would be allocated: `output f32[2, 3]`, `the arena`, `input `x``.
        what: String,
        /// Its size in bytes (`None`: more than u128 holds).
        bytes: Option<u128>,
        /// The limit.
        limit: MemoryLimit,
    },
    /// A dim of a shape evaluates to a negative number or overflows i64.
    #[error("{what}: dim `{dim}` {problem}")]
    BadDim {
        /// Whose shape.
        what: String,
        /// The dim as written.
        dim: String,
        /// `is negative`, `is -2, a negative size` or `overflows i64`.
        problem: String,
    },
    /// A shape with a zero dim, whose other dims multiply past `isize::MAX`: it holds no
    /// elements, but its strides cannot be computed (ndarray refuses such shapes too).
    #[error("{what}: its non-zero dims multiply past 2^63 - 1, so its strides overflow")]
    Unaddressable {
        /// Whose shape: `output f32[0, 4294967296, 4294967296]`.
        what: String,
    },
    /// A size check wrapped with the node it was made for.
    #[error("node `{name}` ({op}): {error}")]
    Node {
        /// The node's name.
        name: String,
        /// The op's name.
        op: String,
        /// The failed check (not a `source`, so that it prints once).
        error: Box<SizeError>,
    },
}

impl SizeError {
    /// Names the node the check was made for.
    pub fn at(self, node: &Node) -> SizeError {
        SizeError::Node {
            name: node.name.clone(),
            op: node.op.name(),
            error: Box::new(self),
        }
    }
}

/// Checks that `bytes` of `what` fit under `limit`.
pub fn check_bytes(
    what: impl FnOnce() -> String,
    bytes: Option<u128>,
    limit: MemoryLimit,
) -> Result<(), SizeError> {
    match bytes {
        Some(b) if limit.allows(b) => Ok(()),
        _ => Err(SizeError::OverLimit {
            what: what(),
            bytes,
            limit,
        }),
    }
}

/// Whether the strides of `shape` fit in `isize`: the product of its non-zero dims is at
/// most `isize::MAX` (the rule ndarray applies). A shape that passes a byte limit and has no
/// zero dim always does.
pub fn addressable(shape: &[usize]) -> bool {
    (shape.iter().filter(|&&d| d != 0))
        .try_fold(1usize, |n, &d| n.checked_mul(d))
        .is_some_and(|n| n <= isize::MAX as usize)
}

/// Checks a concrete tensor of `dtype` and `shape` (`what`, e.g. ``input `x` ``) against
/// `limit` before it is allocated, and that its strides can be computed.
pub fn check_tensor(
    what: &str,
    dtype: DType,
    shape: &[usize],
    limit: MemoryLimit,
) -> Result<(), SizeError> {
    let what = || format!("{what} {}", TensorType::fixed(dtype, shape));
    check_bytes(what, tensor_bytes(dtype, shape), limit)?;
    match addressable(shape) {
        true => Ok(()),
        false => Err(SizeError::Unaddressable { what: what() }),
    }
}

/// The concrete shape of `ty` under `b`: `Ok(None)` when a dim has an unbound symbol (a
/// data-dependent size not known yet), an error when a dim is negative or overflows i64.
pub fn concrete_shape(
    what: &str,
    ty: &TensorType,
    b: &Bindings,
) -> Result<Option<Vec<usize>>, SizeError> {
    let mut shape = Vec::with_capacity(ty.rank());
    for d in &ty.shape {
        let bad = |problem: String| SizeError::BadDim {
            what: format!("{what} {ty}"),
            dim: d.to_string(),
            problem,
        };
        match eval_dim(d, b) {
            DimValue::Unbound => return Ok(None),
            DimValue::Overflow => return Err(bad("overflows i64".into())),
            DimValue::Value(v) => {
                let negative = || match d.is_const() {
                    true => "is negative".to_string(),
                    false => format!("is {v}, a negative size"),
                };
                let n = usize::try_from(v).map_err(|_| bad(negative()))?;
                shape.push(n);
            }
        }
    }
    Ok(Some(shape))
}

/// A dim evaluated under bindings, telling an unbound symbol from an overflow.
enum DimValue {
    Value(i64),
    Unbound,
    Overflow,
}

fn eval_dim(d: &Dim, b: &Bindings) -> DimValue {
    if let Some(v) = d.eval(b) {
        return DimValue::Value(v);
    }
    if d.symbols().iter().all(|s| b.contains_key(s)) {
        DimValue::Overflow
    } else {
        DimValue::Unbound
    }
}

/// Checks every output of `node` whose shape is known under `b` against `limit`; the error
/// names the node, its op, the output's type and its size.
pub fn check_node(
    g: &Graph,
    node: &Node,
    b: &Bindings,
    limit: MemoryLimit,
) -> Result<(), SizeError> {
    for &v in &node.outputs {
        let ty = g.value_type(v);
        if let Some(shape) = concrete_shape("output", ty, b).map_err(|e| e.clone().at(node))? {
            check_tensor("output", ty.dtype, &shape, limit).map_err(|e| e.at(node))?;
        }
    }
    Ok(())
}

/// Checks every node's outputs (see [`check_node`]) and every graph input, before anything
/// runs or is compiled.
///
/// ```
/// use kiln_ir::{check_graph, parse, Bindings, MemoryLimit};
/// let g = parse(
///     "graph @g(%x: f32[n]) -> f32[n, n] {
///         %y = expand %x {shape=[n, n]}
///         return %y
///     }",
/// )
/// .unwrap();
/// let b = [("n".to_string(), 1 << 20)].into_iter().collect::<Bindings>();
/// let e = check_graph(&g, &b, MemoryLimit::new(1 << 30)).unwrap_err();
/// assert_eq!(
///     e.to_string(),
///     "node `` (expand): output f32[1048576, 1048576] needs 4 TiB (4398046511104 bytes), \
///      over the limit of 1 GiB"
/// );
/// ```
pub fn check_graph(g: &Graph, b: &Bindings, limit: MemoryLimit) -> Result<(), SizeError> {
    for (name, v) in &g.inputs {
        let what = format!("input `{name}`");
        let ty = g.value_type(*v);
        if let Some(shape) = concrete_shape(&what, ty, b)? {
            check_tensor(&what, ty.dtype, &shape, limit)?;
        }
    }
    for node in &g.nodes {
        check_node(g, node, b, limit)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_parse_with_binary_suffixes() {
        let p = |s: &str| s.parse::<MemoryLimit>().map(MemoryLimit::bytes);
        assert_eq!(p("1000"), Ok(1000));
        assert_eq!(p("8G"), Ok(8 << 30));
        assert_eq!(p("512MiB"), Ok(512 << 20));
        assert_eq!(p("4 kb"), Ok(4096));
        assert_eq!(p("3B"), Ok(3));
        assert!(p("").is_err());
        assert!(p("-1").is_err());
        assert!(p("1.5G").is_err());
        assert!(p("12X").is_err());
        assert!(p("99999999999T").is_err(), "overflows u64");
    }

    #[test]
    fn human_units() {
        assert_eq!(human_bytes(0), "0 B");
        assert_eq!(human_bytes(1023), "1023 B");
        assert_eq!(human_bytes(1024), "1 KiB");
        assert_eq!(human_bytes(19_746_867 * 1024), "18.8 GiB");
        assert_eq!(human_bytes(1 << 64), "16 EiB");
        assert_eq!(human_bytes(u128::MAX), "281474976710656 YiB");
    }

    #[test]
    fn meminfo_total() {
        let text = "MemTotal:       24683584 kB\nMemFree:        1 kB\n";
        assert_eq!(mem_total(text), Some(24683584 * 1024));
        assert_eq!(mem_total("MemFree: 1 kB"), None);
        assert_eq!(mem_total("MemTotal: x kB"), None);
        assert!(MemoryLimit::from_machine().bytes() > 0);
    }

    #[test]
    fn tensor_sizes_never_wrap() {
        assert_eq!(tensor_bytes(DType::F32, &[2, 3]), Some(24));
        assert_eq!(tensor_bytes(DType::F32, &[1 << 31, 1 << 31]), Some(1 << 64));
        assert_eq!(tensor_bytes(DType::F64, &[usize::MAX; 3]), None);
        let limit = MemoryLimit::new(1 << 30);
        let e = check_tensor("output", DType::F32, &[1 << 31, 1 << 31], limit).unwrap_err();
        assert_eq!(
            e.to_string(),
            "output f32[2147483648, 2147483648] needs 16 EiB (18446744073709551616 bytes), \
             over the limit of 1 GiB"
        );
        let e = check_tensor("output", DType::F64, &[usize::MAX; 3], limit).unwrap_err();
        assert!(e.to_string().contains("needs more than 2^128 bytes"), "{e}");
        assert!(check_tensor("output", DType::F32, &[256, 1 << 20], limit).is_ok());
    }

    #[test]
    fn empty_shapes_whose_strides_overflow_are_errors() {
        let limit = MemoryLimit::new(1 << 30);
        assert!(check_tensor("output", DType::F32, &[0, 1 << 31, 1 << 31], limit).is_ok());
        let e = check_tensor("output", DType::F32, &[0, 1 << 40, 1 << 40], limit).unwrap_err();
        assert_eq!(
            e.to_string(),
            "output f32[0, 1099511627776, 1099511627776]: its non-zero dims multiply past \
             2^63 - 1, so its strides overflow"
        );
        let t = crate::Tensor::full(DType::F32, &[0, 1 << 40, 1 << 40], 0.0);
        assert!(t.is_err(), "ndarray would panic on this shape");
    }

    #[test]
    fn negative_and_overflowing_dims_are_errors() {
        let b: Bindings = [("n".to_string(), 3), ("big".to_string(), i64::MAX)]
            .into_iter()
            .collect();
        let ty = |d: &str| TensorType::new(DType::F32, vec![d.parse().unwrap()]);
        assert_eq!(concrete_shape("output", &ty("n-1"), &b), Ok(Some(vec![2])));
        assert_eq!(concrete_shape("output", &ty("m"), &b), Ok(None));
        let e = concrete_shape("output", &ty("n-5"), &b).unwrap_err();
        assert_eq!(
            e.to_string(),
            "output f32[n-5]: dim `n-5` is -2, a negative size"
        );
        let e = concrete_shape("output", &ty("big*2"), &b).unwrap_err();
        assert_eq!(
            e.to_string(),
            "output f32[2*big]: dim `2*big` overflows i64"
        );
    }
}
