//! A `.kir` file split into its header (commands, pipeline, settings) and graph cases with
//! their directives and expected blocks (style.md §9.1).

use std::ops::Range;

/// One `test COMMAND OPTION*` line.
pub struct Command {
    /// The command name (`parse`, `verify`, …).
    pub name: String,
    /// Options such as `precise-output`.
    pub options: Vec<String>,
}

/// A `; name: text` directive line, with its 1-based line.
pub struct Directive {
    pub line: usize,
    pub name: String,
    pub text: String,
}

/// One graph and the comment lines after it.
pub struct Case {
    /// 1-based line of the `graph` keyword.
    pub first_line: usize,
    /// The graph's text (from `graph` to its closing `}`).
    pub text: String,
    /// Header directives, then the case's own.
    pub directives: Vec<Directive>,
    /// The expected block (`; ` lines that are not directives), with the prefix removed.
    pub expected: Option<String>,
    /// 0-based line indices of the comment region after the graph.
    pub after: Range<usize>,
}

/// A parsed filetest.
pub struct TestFile {
    pub commands: Vec<Command>,
    pub pipeline: Option<Vec<String>>,
    pub sets: Vec<(String, String)>,
    pub cases: Vec<Case>,
    /// The file's lines, for blessing.
    pub lines: Vec<String>,
}

/// The text of an expectation line (`; text` or `;`), unless it is a `;;` note.
fn comment_body(line: &str) -> Option<&str> {
    let t = line.trim_start();
    if t.starts_with(";;") {
        return None;
    }
    let body = t.strip_prefix(';')?;
    Some(body.strip_prefix(' ').unwrap_or(body))
}

/// `name: text` if the comment is a directive (`run:`, `bind:`, `error:`, `check:`, …).
fn directive(body: &str) -> Option<(String, String)> {
    let (name, text) = body.split_once(':')?;
    let ok = !name.is_empty()
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
    ok.then(|| (name.to_string(), text.trim().to_string()))
}

/// True for a comment line that belongs to the expected block.
pub fn is_expectation(line: &str) -> bool {
    comment_body(line).is_some_and(|b| directive(b).is_none())
}

impl TestFile {
    /// Splits the file's text.
    pub fn parse(text: &str) -> Result<TestFile, String> {
        let lines: Vec<String> = text.lines().map(str::to_string).collect();
        let mut file = TestFile {
            commands: Vec::new(),
            pipeline: None,
            sets: Vec::new(),
            cases: Vec::new(),
            lines,
        };
        let mut header_directives = Vec::new();
        let mut i = 0;
        while i < file.lines.len() && !file.lines[i].starts_with("graph") {
            file.header_line(i, &mut header_directives)?;
            i += 1;
        }
        while i < file.lines.len() {
            i = file.case(i, &header_directives)?;
        }
        if file.commands.is_empty() {
            return Err("no `test` line".into());
        }
        Ok(file)
    }

    fn header_line(&mut self, i: usize, directives: &mut Vec<Directive>) -> Result<(), String> {
        let line = self.lines[i].trim();
        let mut words = line.split_whitespace();
        match words.next() {
            None => {}
            Some("test") => {
                let name = words
                    .next()
                    .ok_or(format!("line {}: `test` needs a command", i + 1))?;
                let options = words.map(str::to_string).collect();
                self.commands.push(Command {
                    name: name.to_string(),
                    options,
                });
            }
            Some("pipeline") => {
                let rest = line["pipeline".len()..].split(',');
                self.pipeline = Some(
                    rest.map(|p| p.trim().to_string())
                        .filter(|p| !p.is_empty())
                        .collect(),
                );
            }
            Some("set") => {
                let kv = line["set".len()..].trim();
                let (k, v) = kv
                    .split_once('=')
                    .ok_or(format!("line {}: `set` needs KEY=VALUE", i + 1))?;
                self.sets.push((k.trim().to_string(), v.trim().to_string()));
            }
            Some(w) if w.starts_with(';') => {
                if let Some((name, text)) = comment_body(line).and_then(directive) {
                    directives.push(Directive {
                        line: i + 1,
                        name,
                        text,
                    });
                }
            }
            Some(w) => return Err(format!("line {}: unexpected `{w}` in the header", i + 1)),
        }
        Ok(())
    }

    /// Reads the case starting at line `i`; returns the index after it.
    fn case(&mut self, start: usize, header: &[Directive]) -> Result<usize, String> {
        let Some(end) =
            (start..self.lines.len()).find(|&j| self.lines[j].trim_start().starts_with('}'))
        else {
            return Err(format!("line {}: graph without a closing `}}`", start + 1));
        };
        let after_end = (end + 1..self.lines.len())
            .find(|&j| self.lines[j].starts_with("graph"))
            .unwrap_or(self.lines.len());
        let mut directives: Vec<Directive> = header
            .iter()
            .map(|d| Directive {
                line: d.line,
                name: d.name.clone(),
                text: d.text.clone(),
            })
            .collect();
        let mut expected: Vec<&str> = Vec::new();
        for j in end + 1..after_end {
            let line = &self.lines[j];
            if !line.trim().is_empty() && !line.trim_start().starts_with(';') {
                return Err(format!(
                    "line {}: only `;` comments may follow a graph",
                    j + 1
                ));
            }
            let Some(body) = comment_body(line) else {
                continue;
            };
            match directive(body) {
                Some((name, text)) => directives.push(Directive {
                    line: j + 1,
                    name,
                    text,
                }),
                None => expected.push(body),
            }
        }
        self.cases.push(Case {
            first_line: start + 1,
            text: self.lines[start..=end].join("\n") + "\n",
            directives,
            expected: (!expected.is_empty()).then(|| expected.join("\n") + "\n"),
            after: end + 1..after_end,
        });
        Ok(after_end)
    }

    /// The value of a `set` key, parsed, or `default`.
    pub fn setting<T: std::str::FromStr>(&self, key: &str, default: T) -> Result<T, String> {
        match self.sets.iter().rev().find(|(k, _)| k == key) {
            Some((_, v)) => v
                .parse()
                .map_err(|_| format!("bad value `{v}` for `set {key}`")),
            None => Ok(default),
        }
    }
}
