//! A character cursor over the text format: lines, comments, names, strings, balanced spans.

use super::ParseError;

/// A position in the source text. Newlines are significant (one statement per line), so
/// [`Cursor::skip_ws`] stops at them and [`Cursor::skip_lines`] crosses them.
pub(super) struct Cursor<'a> {
    s: &'a str,
    pos: usize,
    line: usize,
}

/// A reference to a value: `%12` or `%name` / `%"odd name"`.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(super) enum Ref {
    /// A numbered value.
    Num(u32),
    /// A named value (graph inputs, or hand-written names).
    Name(String),
}

impl<'a> Cursor<'a> {
    /// A cursor at the start of `s`.
    pub fn new(s: &'a str) -> Cursor<'a> {
        Cursor { s, pos: 0, line: 1 }
    }

    /// The current position, to return to with [`Cursor::reset`].
    pub fn mark(&self) -> (usize, usize) {
        (self.pos, self.line)
    }

    /// Returns to a position from [`Cursor::mark`].
    pub fn reset(&mut self, mark: (usize, usize)) {
        (self.pos, self.line) = mark;
    }

    /// The 1-based line of the current position.
    pub fn line(&self) -> usize {
        self.line
    }

    /// An error at the current line.
    pub fn err<T>(&self, message: impl Into<String>) -> Result<T, ParseError> {
        Err(ParseError {
            line: self.line,
            message: message.into(),
        })
    }

    fn rest(&self) -> &'a str {
        &self.s[self.pos..]
    }

    fn raw_peek(&self) -> Option<char> {
        self.rest().chars().next()
    }

    fn bump(&mut self) -> Option<char> {
        let c = self.raw_peek()?;
        self.pos += c.len_utf8();
        if c == '\n' {
            self.line += 1;
        }
        Some(c)
    }

    /// Skips spaces, tabs, carriage returns and `;` comments, stopping at a newline.
    pub fn skip_ws(&mut self) {
        while let Some(c) = self.raw_peek() {
            match c {
                ' ' | '\t' | '\r' => {
                    self.bump();
                }
                ';' => {
                    while self.raw_peek().is_some_and(|c| c != '\n') {
                        self.bump();
                    }
                }
                _ => return,
            }
        }
    }

    /// Skips whitespace, comments and newlines.
    pub fn skip_lines(&mut self) {
        loop {
            self.skip_ws();
            if self.raw_peek() != Some('\n') {
                return;
            }
            self.bump();
        }
    }

    /// The next character after whitespace on this line.
    pub fn peek(&mut self) -> Option<char> {
        self.skip_ws();
        self.raw_peek()
    }

    /// Consumes `c` if it comes next on this line.
    pub fn eat(&mut self, c: char) -> bool {
        if self.peek() == Some(c) {
            self.bump();
            true
        } else {
            false
        }
    }

    /// Consumes the literal `s` if it comes next on this line.
    pub fn eat_str(&mut self, s: &str) -> bool {
        self.skip_ws();
        if self.rest().starts_with(s) {
            for _ in s.chars() {
                self.bump();
            }
            true
        } else {
            false
        }
    }

    /// Consumes `c` or fails naming what was expected.
    pub fn expect(&mut self, c: char, what: &str) -> Result<(), ParseError> {
        if self.eat(c) {
            Ok(())
        } else {
            let found = self.describe_next();
            self.err(format!("expected `{c}` {what}, found {found}"))
        }
    }

    /// A short description of what comes next, for error messages.
    pub fn describe_next(&mut self) -> String {
        match self.peek() {
            None => "end of input".into(),
            Some('\n') => "end of line".into(),
            Some(_) => {
                let word: String = self
                    .rest()
                    .chars()
                    .take_while(|c| !c.is_whitespace())
                    .take(24)
                    .collect();
                format!("`{word}`")
            }
        }
    }

    /// True at the end of the text.
    pub fn at_eof(&mut self) -> bool {
        self.peek().is_none()
    }

    /// Consumes the end of a line (or of the input).
    pub fn end_line(&mut self, what: &str) -> Result<(), ParseError> {
        match self.peek() {
            None => Ok(()),
            Some('\n') => {
                self.bump();
                Ok(())
            }
            Some(_) => {
                let found = self.describe_next();
                self.err(format!("expected end of line after {what}, found {found}"))
            }
        }
    }

    /// An identifier `[A-Za-z_][A-Za-z0-9_.]*`, if one comes next.
    pub fn ident(&mut self) -> Option<&'a str> {
        self.skip_ws();
        let rest = self.rest();
        let first = rest.chars().next()?;
        if !(first.is_ascii_alphabetic() || first == '_') {
            return None;
        }
        let len = rest.find(|c: char| !is_ident_char(c)).unwrap_or(rest.len());
        self.pos += len;
        Some(&rest[..len])
    }

    /// Consumes the keyword `kw` if the next identifier is exactly it.
    pub fn keyword(&mut self, kw: &str) -> bool {
        let save = self.mark();
        match self.ident() {
            Some(w) if w == kw => true,
            _ => {
                self.reset(save);
                false
            }
        }
    }

    /// A quoted string with `\\`, `\"`, `\n`, `\t`, `\r` and `\u{..}` escapes.
    pub fn string(&mut self) -> Result<String, ParseError> {
        self.expect('"', "to open a string")?;
        let mut out = String::new();
        loop {
            if matches!(self.raw_peek(), None | Some('\n')) {
                return self.err("unterminated string");
            }
            match self.bump() {
                None | Some('\n') => return self.err("unterminated string"),
                Some('"') => return Ok(out),
                Some('\\') => out.push(self.escape()?),
                Some(c) => out.push(c),
            }
        }
    }

    fn escape(&mut self) -> Result<char, ParseError> {
        match self.bump() {
            Some('\\') => Ok('\\'),
            Some('"') => Ok('"'),
            Some('n') => Ok('\n'),
            Some('t') => Ok('\t'),
            Some('r') => Ok('\r'),
            Some('u') if self.eat('{') => {
                let rest = self.rest();
                let len = rest.find('}').unwrap_or(rest.len());
                let code = u32::from_str_radix(&rest[..len], 16)
                    .ok()
                    .and_then(char::from_u32);
                let Some(c) = code else {
                    return self.err(format!("bad unicode escape `\\u{{{}}}`", &rest[..len]));
                };
                self.pos += len;
                self.expect('}', "to close a unicode escape")?;
                Ok(c)
            }
            other => self.err(format!(
                "unknown escape `\\{}`",
                other.map(String::from).unwrap_or_default()
            )),
        }
    }

    /// A name: an identifier or a quoted string.
    pub fn name(&mut self, what: &str) -> Result<String, ParseError> {
        if self.peek() == Some('"') {
            return self.string();
        }
        match self.ident() {
            Some(w) => Ok(w.to_string()),
            None => {
                let found = self.describe_next();
                self.err(format!("expected {what}, found {found}"))
            }
        }
    }

    /// A value reference after `%`: digits for a numbered value, else a name.
    pub fn value_ref(&mut self) -> Result<Ref, ParseError> {
        self.expect('%', "before a value")?;
        let rest = self.rest();
        let len = rest
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(rest.len());
        if len == 0 {
            return Ok(Ref::Name(self.name("a value name")?));
        }
        let n = rest[..len].parse::<u32>();
        self.pos += len;
        match n {
            Ok(n) => Ok(Ref::Num(n)),
            Err(_) => self.err(format!("value number `%{}` is too large", &rest[..len])),
        }
    }

    /// The text up to (not including) the first of `stops` outside brackets, parentheses
    /// and strings, on this line. Fails if the line ends first.
    pub fn balanced(&mut self, stops: &[char], what: &str) -> Result<&'a str, ParseError> {
        self.skip_ws();
        let rest = self.rest();
        match balanced_len(rest, stops) {
            Some(len) => {
                self.pos += len;
                Ok(rest[..len].trim_end())
            }
            None => self.err(format!("unterminated {what}")),
        }
    }

    /// A word of number-like characters (`-1.5e-3`, `inf`, `true`).
    pub fn word(&mut self) -> &'a str {
        self.skip_ws();
        let rest = self.rest();
        let len = rest
            .find(|c: char| !(c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '+' | '-')))
            .unwrap_or(rest.len());
        self.pos += len;
        &rest[..len]
    }
}

fn is_ident_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_' || c == '.'
}

/// Length of the prefix of `s` before the first of `stops` at depth 0 outside strings;
/// `None` if a newline or the end comes first.
fn balanced_len(s: &str, stops: &[char]) -> Option<usize> {
    let mut depth = 0usize;
    let mut in_str = false;
    let mut escaped = false;
    for (i, c) in s.char_indices() {
        if c == '\n' {
            return None;
        }
        if in_str {
            match (escaped, c) {
                (true, _) => escaped = false,
                (false, '\\') => escaped = true,
                (false, '"') => in_str = false,
                _ => {}
            }
            continue;
        }
        if depth == 0 && stops.contains(&c) {
            return Some(i);
        }
        match c {
            '"' => in_str = true,
            '(' | '[' => depth += 1,
            ')' | ']' => depth = depth.checked_sub(1)?,
            _ => {}
        }
    }
    None
}

/// Splits `s` at `sep` where it is outside brackets, parentheses and strings; items are
/// trimmed. An all-blank `s` gives no items.
pub(super) fn split_top(s: &str, sep: char) -> Vec<&str> {
    if s.trim().is_empty() {
        return Vec::new();
    }
    let mut out = Vec::new();
    let mut rest = s;
    loop {
        let with_end = format!("{rest}{sep}");
        match balanced_len(&with_end, &[sep]) {
            Some(len) if len < rest.len() => {
                out.push(rest[..len].trim());
                rest = &rest[len + sep.len_utf8()..];
            }
            _ => {
                out.push(rest.trim());
                return out;
            }
        }
    }
}

/// True if `s` prints bare as a name (otherwise it is quoted).
pub(super) fn is_bare_name(s: &str) -> bool {
    let mut chars = s.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_')
        && chars.all(is_ident_char)
}

/// `s` quoted with the escapes [`Cursor::string`] reads.
pub(super) fn quote(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            '\r' => out.push_str("\\r"),
            c if c.is_control() => out.push_str(&format!("\\u{{{:x}}}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// A name, bare if it can be, else quoted.
pub(super) fn name_text(s: &str) -> String {
    if is_bare_name(s) {
        s.to_string()
    } else {
        quote(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn split_top_respects_nesting_and_strings() {
        assert_eq!(
            split_top("a, min(b, c), [1, 2]", ','),
            vec!["a", "min(b, c)", "[1, 2]"]
        );
        assert_eq!(split_top("\"x,y\", z", ','), vec!["\"x,y\"", "z"]);
        assert!(split_top("  ", ',').is_empty());
    }

    #[test]
    fn quoted_strings_read_back() {
        for s in [
            "plain",
            "a \"q\" b",
            "back\\slash",
            "tab\tnl\n",
            "bell\u{7}",
            "ünï",
        ] {
            let q = quote(s);
            assert_eq!(Cursor::new(&q).string().unwrap(), s);
        }
    }

    #[test]
    fn comments_stop_at_newline() {
        let mut c = Cursor::new("  ; note\n x");
        assert_eq!(c.peek(), Some('\n'));
        c.skip_lines();
        assert_eq!(c.ident(), Some("x"));
        assert_eq!(c.line(), 2);
    }
}
