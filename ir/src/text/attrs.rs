//! An op's `{key=value, ...}` block: raw values read by typed getters, each used once.

use super::cursor::{split_top, Cursor};
use super::ParseError;
use crate::{DType, Dim};
use std::str::FromStr;

/// Attributes as written, before the op says what type each one has.
pub(super) struct Attrs {
    items: Vec<(String, String)>,
}

impl Attrs {
    /// Reads `{k=v, ...}` if it comes next; no block gives no attributes.
    pub fn parse(cur: &mut Cursor<'_>) -> Result<Attrs, ParseError> {
        let mut items: Vec<(String, String)> = Vec::new();
        if !cur.eat('{') {
            return Ok(Attrs { items });
        }
        if cur.eat('}') {
            return Ok(Attrs { items });
        }
        loop {
            let Some(key) = cur.ident() else {
                let found = cur.describe_next();
                return cur.err(format!("expected an attribute name, found {found}"));
            };
            if items.iter().any(|(k, _)| k == key) {
                return cur.err(format!("attribute `{key}` given twice"));
            }
            cur.expect('=', &format!("after attribute `{key}`"))?;
            let raw = cur.balanced(&[',', '}'], "attribute block")?;
            items.push((key.to_string(), raw.to_string()));
            if cur.eat('}') {
                return Ok(Attrs { items });
            }
            cur.expect(',', "between attributes")?;
        }
    }

    /// Removes and returns the raw text of `key`.
    fn take(&mut self, key: &str) -> Result<String, String> {
        match self.items.iter().position(|(k, _)| k == key) {
            Some(i) => Ok(self.items.remove(i).1),
            None => Err(format!("missing attribute `{key}`")),
        }
    }

    /// Fails if an attribute was not used by the op.
    pub fn finish(self, op: &str) -> Result<(), String> {
        match self.items.first() {
            Some((k, _)) => Err(format!("`{op}` has no attribute `{k}`")),
            None => Ok(()),
        }
    }

    fn scalar<T: FromStr>(&mut self, key: &str, what: &str) -> Result<T, String> {
        let raw = self.take(key)?;
        raw.parse()
            .map_err(|_| format!("attribute `{key}` must be {what}, found `{raw}`"))
    }

    /// A non-negative integer.
    pub fn usize(&mut self, key: &str) -> Result<usize, String> {
        self.scalar(key, "a non-negative integer")
    }

    /// A signed integer.
    pub fn i64(&mut self, key: &str) -> Result<i64, String> {
        self.scalar(key, "an integer")
    }

    /// A non-negative 32-bit integer.
    pub fn u32(&mut self, key: &str) -> Result<u32, String> {
        self.scalar(key, "a non-negative integer")
    }

    /// A float (as Rust prints it: `1e-5`, `0.5`).
    pub fn f32(&mut self, key: &str) -> Result<f32, String> {
        self.scalar(key, "a number")
    }

    /// `true` or `false`.
    pub fn bool(&mut self, key: &str) -> Result<bool, String> {
        self.scalar(key, "`true` or `false`")
    }

    /// A dtype name.
    pub fn dtype(&mut self, key: &str) -> Result<DType, String> {
        self.scalar(key, "a dtype")
    }

    /// A dim expression.
    pub fn dim(&mut self, key: &str) -> Result<Dim, String> {
        let raw = self.take(key)?;
        raw.parse().map_err(|e| format!("attribute `{key}`: {e}"))
    }

    /// A name from a fixed set, read by `from_name`.
    pub fn named<T>(&mut self, key: &str, from_name: fn(&str) -> Option<T>) -> Result<T, String> {
        let raw = self.take(key)?;
        from_name(&raw).ok_or_else(|| format!("attribute `{key}` has unknown value `{raw}`"))
    }

    /// An identifier or a quoted string.
    pub fn string(&mut self, key: &str) -> Result<String, String> {
        let raw = self.take(key)?;
        let mut cur = Cursor::new(&raw);
        let s = cur
            .name("a name")
            .map_err(|e| format!("attribute `{key}`: {}", e.message))?;
        if !cur.at_eof() {
            return Err(format!(
                "attribute `{key}`: unexpected text after the name in `{raw}`"
            ));
        }
        Ok(s)
    }

    /// A bracketed list, each item read by `item`.
    fn list<T>(
        &mut self,
        key: &str,
        item: impl Fn(&str) -> Option<T>,
        what: &str,
    ) -> Result<Vec<T>, String> {
        let raw = self.take(key)?;
        let bad = || format!("attribute `{key}` must be a list of {what}, found `{raw}`");
        let inner = raw
            .strip_prefix('[')
            .and_then(|r| r.strip_suffix(']'))
            .ok_or_else(bad)?;
        split_top(inner, ',')
            .into_iter()
            .map(|s| item(s).ok_or_else(bad))
            .collect()
    }

    /// A list of non-negative integers.
    pub fn usizes(&mut self, key: &str) -> Result<Vec<usize>, String> {
        self.list(key, |s| s.parse().ok(), "non-negative integers")
    }

    /// A list of integers.
    pub fn i64s(&mut self, key: &str) -> Result<Vec<i64>, String> {
        self.list(key, |s| s.parse().ok(), "integers")
    }

    /// A list of dim expressions.
    pub fn dims(&mut self, key: &str) -> Result<Vec<Dim>, String> {
        self.list(key, |s| s.parse().ok(), "dims")
    }

    /// A list of `(a, b)` pairs.
    pub fn pairs<T: FromStr>(&mut self, key: &str) -> Result<Vec<(T, T)>, String> {
        self.list(key, pair, "pairs `(a, b)`")
    }
}

fn pair<T: FromStr>(s: &str) -> Option<(T, T)> {
    let inner = s.strip_prefix('(')?.strip_suffix(')')?;
    let (a, b) = inner.split_once(',')?;
    Some((a.trim().parse().ok()?, b.trim().parse().ok()?))
}
