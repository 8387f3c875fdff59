//! Types and tensor literals: `f32[batch, 2*seq]`, `f32[2, 2] [[1.0, 2.0], [3.0, 4.0]]`,
//! scalars, and `b64"..."` blobs (little-endian bytes) for large constants.

use super::cursor::{split_top, Cursor};
use super::ParseError;
use crate::{dispatch, with_dtype, DType, Dim, Elem, Tensor, TensorType};
use base64::Engine;
use half::{bf16, f16};

/// Constants with more elements than this print as a base64 blob.
pub const INLINE_LIMIT: usize = 64;

/// An element type with an exact text form.
trait TextElem: Elem {
    /// The text form; floats use the shortest repr that reads back exactly.
    fn fmt_text(self) -> String;
    /// Reads the text form.
    fn parse_text(s: &str) -> Option<Self>;
}

macro_rules! int_text {
    ($($t:ty),*) => {$(
        impl TextElem for $t {
            fn fmt_text(self) -> String {
                self.to_string()
            }
            fn parse_text(s: &str) -> Option<Self> {
                s.parse().ok()
            }
        }
    )*};
}

int_text!(i8, u8, i16, u16, i32, u32, i64, u64);

impl TextElem for bool {
    fn fmt_text(self) -> String {
        self.to_string()
    }
    fn parse_text(s: &str) -> Option<Self> {
        match s {
            "true" | "1" => Some(true),
            "false" | "0" => Some(false),
            _ => None,
        }
    }
}

macro_rules! float_text {
    ($t:ty) => {
        impl TextElem for $t {
            fn fmt_text(self) -> String {
                if self.is_nan() {
                    "nan".into()
                } else if self.is_infinite() {
                    if self > 0.0 { "inf" } else { "-inf" }.into()
                } else {
                    format!("{self:?}")
                }
            }
            fn parse_text(s: &str) -> Option<Self> {
                match s {
                    "nan" => Some(<$t>::NAN),
                    "inf" | "+inf" => Some(<$t>::INFINITY),
                    "-inf" => Some(<$t>::NEG_INFINITY),
                    _ => s.parse().ok(),
                }
            }
        }
    };
}

float_text!(f32);
float_text!(f64);

macro_rules! half_text {
    ($t:ty) => {
        impl TextElem for $t {
            fn fmt_text(self) -> String {
                self.to_f32().fmt_text()
            }
            fn parse_text(s: &str) -> Option<Self> {
                f32::parse_text(s).map(<$t>::from_f32)
            }
        }
    };
}

half_text!(f16);
half_text!(bf16);

/// A tensor literal with its type; base64 above [`INLINE_LIMIT`] elements.
pub(super) fn print_tensor(t: &Tensor) -> String {
    let ty = TensorType::fixed(t.dtype(), t.shape());
    if t.len() > INLINE_LIMIT {
        let b64 = base64::engine::general_purpose::STANDARD.encode(t.to_le_bytes());
        return format!("{ty} b64\"{b64}\"");
    }
    let elems: Vec<String> = dispatch!(t, a => a.iter().map(|x| x.fmt_text()).collect());
    format!("{ty} {}", nest(&elems, t.shape()))
}

fn nest(elems: &[String], shape: &[usize]) -> String {
    let Some((&n, inner)) = shape.split_first() else {
        return elems.first().cloned().unwrap_or_default();
    };
    let chunk: usize = inner.iter().product();
    let parts: Vec<String> = (0..n)
        .map(|i| nest(&elems[i * chunk..(i + 1) * chunk], inner))
        .collect();
    format!("[{}]", parts.join(", "))
}

/// A type: `f32[batch, 2*seq]`.
pub(super) fn tensor_type(cur: &mut Cursor<'_>) -> Result<TensorType, ParseError> {
    let Some(word) = cur.ident() else {
        let found = cur.describe_next();
        return cur.err(format!(
            "expected a type such as `f32[batch, 3]`, found {found}"
        ));
    };
    let Ok(dtype) = word.parse::<DType>() else {
        return cur.err(format!("unknown dtype `{word}`"));
    };
    cur.expect('[', "after the dtype")?;
    let inner = cur.balanced(&[']'], "shape")?;
    cur.expect(']', "to close the shape")?;
    let shape = split_top(inner, ',')
        .into_iter()
        .map(|d| d.parse::<Dim>().or_else(|e| cur.err(e.to_string())))
        .collect::<Result<Vec<Dim>, ParseError>>()?;
    Ok(TensorType::new(dtype, shape))
}

/// A literal: `f32[2] [1.0, 2.0]`, `f32[] 1.5`, `f32[100] b64"..."`, or untyped `[1, 2]` /
/// `3`, which takes `dtype` and the shape of its nesting.
pub(super) fn tensor_literal(
    cur: &mut Cursor<'_>,
    dtype: Option<DType>,
) -> Result<Tensor, ParseError> {
    let mark = cur.mark();
    let typed = match cur.ident() {
        Some(w) if w.parse::<DType>().is_ok() && cur.peek() == Some('[') => {
            cur.reset(mark);
            Some(tensor_type(cur)?)
        }
        _ => {
            cur.reset(mark);
            None
        }
    };
    let Some(ty) = typed else {
        let Some(dtype) = dtype else {
            return cur.err("a literal needs a type here, such as `f32[2] [1.0, 2.0]`");
        };
        let mut words = Vec::new();
        let shape = nested(cur, &mut words)?;
        return elements(cur, dtype, &shape, &words);
    };
    let Some(shape) = ty.const_shape() else {
        return cur.err(format!("a literal's shape must be constant, not {ty}"));
    };
    if cur.keyword("b64") {
        let text = cur.string()?;
        let bytes = base64::engine::general_purpose::STANDARD.decode(text.as_bytes());
        let bytes = bytes.or_else(|e| cur.err(format!("bad base64 data: {e}")))?;
        return Tensor::from_le_bytes(ty.dtype, &shape, &bytes).or_else(|e| cur.err(e.to_string()));
    }
    let mut words = Vec::new();
    let nest_shape = nested(cur, &mut words)?;
    // Also accepted: a flat list of the right length, and an empty tensor whose nesting
    // stops at its first zero dim (`[[]]` for `f32[1, 0, 3]`).
    let count_ok = words.len() == shape.iter().product::<usize>();
    let flat_ok = count_ok && nest_shape.len() == 1;
    let empty_ok = words.is_empty() && count_ok && shape.starts_with(&nest_shape);
    if nest_shape != shape && !flat_ok && !empty_ok {
        return cur.err(format!(
            "the literal has shape {nest_shape:?} but its type is {ty}"
        ));
    }
    elements(cur, ty.dtype, &shape, &words)
}

/// A scalar word or a bracketed list of them; returns the nesting's shape.
fn nested<'a>(cur: &mut Cursor<'a>, words: &mut Vec<&'a str>) -> Result<Vec<usize>, ParseError> {
    if !cur.eat('[') {
        let w = cur.word();
        if w.is_empty() {
            let found = cur.describe_next();
            return cur.err(format!("expected a number or `[`, found {found}"));
        }
        words.push(w);
        return Ok(Vec::new());
    }
    let mut count = 0;
    let mut inner: Option<Vec<usize>> = None;
    if !cur.eat(']') {
        loop {
            let s = nested(cur, words)?;
            match &inner {
                Some(prev) if *prev != s => return cur.err("ragged list literal"),
                _ => inner = Some(s),
            }
            count += 1;
            if cur.eat(']') {
                break;
            }
            cur.expect(',', "between list elements")?;
        }
    }
    let mut shape = vec![count];
    shape.extend(inner.unwrap_or_default());
    Ok(shape)
}

fn elements(
    cur: &Cursor<'_>,
    dtype: DType,
    shape: &[usize],
    words: &[&str],
) -> Result<Tensor, ParseError> {
    with_dtype!(dtype, T => {
        let mut v: Vec<T> = Vec::with_capacity(words.len());
        for w in words {
            match T::parse_text(w) {
                Some(x) => v.push(x),
                None => return cur.err(format!("`{w}` is not a {dtype} number")),
            }
        }
        Tensor::from_vec(v, shape).or_else(|e| cur.err(e.to_string()))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lit(s: &str, d: Option<DType>) -> Result<Tensor, ParseError> {
        tensor_literal(&mut Cursor::new(s), d)
    }

    #[test]
    fn floats_read_back_exactly() {
        let xs = vec![
            0.1f32,
            -0.0,
            1e-45,
            f32::MAX,
            f32::INFINITY,
            f32::NEG_INFINITY,
            f32::NAN,
            3.0,
        ];
        let t = Tensor::from_vec(xs, &[2, 4]).unwrap();
        let text = print_tensor(&t);
        assert_eq!(
            text,
            "f32[2, 4] [[0.1, -0.0, 1e-45, 3.4028235e38], [inf, -inf, nan, 3.0]]"
        );
        assert_eq!(lit(&text, None).unwrap(), t);
    }

    #[test]
    fn every_dtype_reads_back() {
        for d in DType::ALL {
            for shape in [&[][..], &[0][..], &[2, 0][..], &[3, 2][..], &[65][..]] {
                let t = Tensor::full(d, shape, 1.0).unwrap();
                assert_eq!(lit(&print_tensor(&t), None).unwrap(), t, "{d} {shape:?}");
            }
        }
    }

    #[test]
    fn untyped_literals_take_the_nesting_shape() {
        let t = lit("[[1, 2], [3, 4]]", Some(DType::I64)).unwrap();
        assert_eq!(t, Tensor::from_vec(vec![1i64, 2, 3, 4], &[2, 2]).unwrap());
        assert_eq!(
            lit("2.5", Some(DType::F64)).unwrap(),
            Tensor::scalar(2.5f64)
        );
        assert_eq!(
            lit("f32[2, 2] [1, 2, 3, 4]", None).unwrap().shape(),
            &[2, 2]
        );
    }

    #[test]
    fn bad_literals_are_errors() {
        assert!(lit("[1, 2]", None).is_err());
        assert!(lit("[[1], [2, 3]]", Some(DType::I32)).is_err());
        assert!(lit("f32[3] [1, 2]", None).is_err());
        assert!(lit("u8[1] [300]", None).is_err());
        assert!(lit("f32[n] [1]", None).is_err());
        assert!(lit("f32[2] b64\"!!\"", None).is_err());
    }
}
