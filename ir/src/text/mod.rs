//! The text format.

use crate::Graph;

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
    format!("graph @{} {{}}", g.name)
}

/// Parses the text format.
pub fn parse(s: &str) -> Result<Graph, ParseError> {
    let _ = s;
    Err(ParseError {
        line: 1,
        message: "parser not written yet".into(),
    })
}
