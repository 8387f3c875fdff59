//! The text format: a readable, exact form of a [`Graph`].
//!
//! ```text
//! graph @bert(%input_ids: i64[batch, seq], %w: f32[100, 32]) -> (%hidden: f32[batch, seq, 32]) {
//!     %2 = const f32[] 0.5
//!     %3 = gather %w, %input_ids {axis=0} : f32[batch, seq, 32]  "/embeddings/Gather"
//!     %4 = mul %3, %2 : f32[batch, seq, 32]
//!     return %4
//! }
//! ```
//!
//! - Graph inputs print by name, every other value by its number (its [`crate::ValueId`]).
//!   Names that are not identifiers (`[A-Za-z_][A-Za-z0-9_.]*`) are quoted: `%input.1`
//!   prints bare, `%"0"` and `%"/emb/out"` in quotes.
//! - A node is `defs = op inputs {attrs} : types "provenance"`; attributes are the op's
//!   typed fields (all of them, any order); the name says the rest (`reduce_sum`, `argmax`).
//! - Constants are literals: `f32[2, 2] [[1.0, 2.0], [3.0, 4.0]]`, exact (shortest float
//!   repr, `nan`, `inf`, `-inf`); above 64 elements, `f32[1000] b64"..."` (little-endian).
//! - `;` starts a comment. When parsing, the output types after `:` may be left out (they
//!   are then inferred, and a constant's type is its literal's), hand-written values may be
//!   named (`%c0`), and a single unnamed result may be written `-> f32[n]`.
//!
//! `parse(&print(g)) == g` for every graph whose values are numbered in definition order
//! (see [`Graph::compact`]) and whose input names are distinct.

mod attrs;
mod cursor;
mod literal;
mod parse;
mod parse_op;
mod print;
#[cfg(test)]
mod tests;

use crate::{DType, Graph, Tensor};

/// A parse error with its line.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("line {line}: {message}")]
pub struct ParseError {
    /// 1-based line.
    pub line: usize,
    /// What is wrong.
    pub message: String,
}

/// Prints a graph in the text format.
pub fn print(g: &Graph) -> String {
    print::print_graph(g)
}

/// Parses one graph in the text format.
pub fn parse(s: &str) -> Result<Graph, ParseError> {
    parse::parse_graph(s).map(|(g, _)| g)
}

/// Parses one graph and also returns, for each node, the 1-based line that defines it
/// (for tools that report node errors against the source).
pub fn parse_with_lines(s: &str) -> Result<(Graph, Vec<usize>), ParseError> {
    parse::parse_graph(s)
}

/// An op's attributes as the text format writes them, `(key, value)` in print order (none
/// for ops whose name says everything).
///
/// ```
/// use kiln_ir::{op_attributes, Op};
/// let a = op_attributes(&Op::Softmax { axis: 2, log: false });
/// assert_eq!(a, [("axis".to_string(), "2".to_string())]);
/// ```
pub fn op_attributes(op: &crate::Op) -> Vec<(String, String)> {
    print::attrs(op)
        .into_iter()
        .filter_map(|kv| {
            let (k, v) = kv.split_once('=')?;
            Some((k.to_string(), v.to_string()))
        })
        .collect()
}

/// Prints a tensor literal, with its type: `f32[2] [1.0, 2.0]`.
pub fn print_tensor(t: &Tensor) -> String {
    literal::print_tensor(t)
}

/// Parses a tensor literal. A typed literal (`i64[2] [1, 2]`) stands alone; an untyped one
/// (`[[1, 2], [3, 4]]`, `2.5`) takes `dtype` and the shape of its nesting.
pub fn parse_tensor(s: &str, dtype: Option<DType>) -> Result<Tensor, ParseError> {
    let mut cur = cursor::Cursor::new(s);
    cur.skip_lines();
    let t = literal::tensor_literal(&mut cur, dtype)?;
    cur.skip_lines();
    if !cur.at_eof() {
        let found = cur.describe_next();
        return cur.err(format!("unexpected {found} after the literal"));
    }
    Ok(t)
}
