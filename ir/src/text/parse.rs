//! The parser: text to graph, one statement per line, errors carrying their line.

use super::attrs::Attrs;
use super::cursor::{Cursor, Ref};
use super::literal::{tensor_literal, tensor_type};
use super::parse_op::op_from_text;
use super::ParseError;
use crate::{infer, Graph, Op, TensorType, ValueId};
use std::collections::BTreeMap;

/// A graph and, for each node, the 1-based line that defines it.
pub(super) fn parse_graph(s: &str) -> Result<(Graph, Vec<usize>), ParseError> {
    let mut cur = Cursor::new(s);
    let mut p = Parser {
        g: Graph::new(""),
        scope: BTreeMap::new(),
        lines: Vec::new(),
    };
    cur.skip_lines();
    if !cur.keyword("graph") {
        let found = cur.describe_next();
        return cur.err(format!("expected `graph`, found {found}"));
    }
    cur.expect('@', "before the graph name")?;
    p.g.name = cur.name("a graph name")?;
    p.params(&mut cur)?;
    if !cur.eat_str("->") {
        let found = cur.describe_next();
        return cur.err(format!(
            "expected `->` and the graph's results, found {found}"
        ));
    }
    let results = results(&mut cur)?;
    cur.expect('{', "to open the graph body")?;
    cur.end_line("`{`")?;
    p.body(&mut cur, &results)?;
    cur.skip_lines();
    if !cur.at_eof() {
        let found = cur.describe_next();
        return cur.err(format!("unexpected {found} after the graph's closing `}}`"));
    }
    Ok((p.g, p.lines))
}

/// A declared result: its name (if written) and type.
type Declared = (Option<String>, TensorType);

struct Parser {
    g: Graph,
    scope: BTreeMap<Ref, ValueId>,
    lines: Vec<usize>,
}

fn show(r: &Ref) -> String {
    match r {
        Ref::Num(n) => format!("%{n}"),
        Ref::Name(s) => format!("%{}", super::cursor::name_text(s)),
    }
}

fn ref_name(r: Ref) -> String {
    match r {
        Ref::Num(n) => n.to_string(),
        Ref::Name(s) => s,
    }
}

/// A parenthesized, comma-separated list that may span lines; `item` reads one entry.
fn paren_list<T>(
    cur: &mut Cursor<'_>,
    mut item: impl FnMut(&mut Cursor<'_>) -> Result<T, ParseError>,
) -> Result<Vec<T>, ParseError> {
    cur.expect('(', "to open a list")?;
    let mut out = Vec::new();
    cur.skip_lines();
    if cur.eat(')') {
        return Ok(out);
    }
    loop {
        cur.skip_lines();
        out.push(item(cur)?);
        cur.skip_lines();
        if cur.eat(')') {
            return Ok(out);
        }
        cur.expect(',', "or `)` in the list")?;
    }
}

/// `-> (%name: type, ...)`, or one bare type (names default to `out<i>`).
fn results(cur: &mut Cursor<'_>) -> Result<Vec<Declared>, ParseError> {
    let one = |cur: &mut Cursor<'_>| -> Result<Declared, ParseError> {
        let name = if cur.peek() == Some('%') {
            let r = cur.value_ref()?;
            cur.expect(':', "after the result name")?;
            Some(ref_name(r))
        } else {
            None
        };
        Ok((name, tensor_type(cur)?))
    };
    if cur.peek() == Some('(') {
        paren_list(cur, one)
    } else {
        Ok(vec![one(cur)?])
    }
}

impl Parser {
    fn define(&mut self, cur: &Cursor<'_>, r: Ref, v: ValueId) -> Result<(), ParseError> {
        if self.scope.contains_key(&r) {
            return cur.err(format!("value {} is defined twice", show(&r)));
        }
        self.scope.insert(r, v);
        Ok(())
    }

    fn lookup(&self, cur: &Cursor<'_>, r: &Ref) -> Result<ValueId, ParseError> {
        match self.scope.get(r) {
            Some(v) => Ok(*v),
            None => cur.err(format!("use of undefined value {}", show(r))),
        }
    }

    fn params(&mut self, cur: &mut Cursor<'_>) -> Result<(), ParseError> {
        let params = paren_list(cur, |cur| {
            let r = cur.value_ref()?;
            cur.expect(':', "after the input name")?;
            Ok((r, tensor_type(cur)?))
        })?;
        for (r, ty) in params {
            let v = self.g.add_input(ref_name(r.clone()), ty);
            self.define(cur, r, v)?;
        }
        Ok(())
    }

    fn body(&mut self, cur: &mut Cursor<'_>, results: &[Declared]) -> Result<(), ParseError> {
        let mut returned = false;
        loop {
            cur.skip_lines();
            if cur.eat('}') {
                break;
            }
            if cur.at_eof() {
                return cur.err("missing `}` at the end of the graph");
            }
            if returned {
                return cur.err("statement after `return`");
            }
            if cur.keyword("return") {
                self.ret(cur, results)?;
                returned = true;
            } else {
                self.lines.push(cur.line());
                self.node(cur)?;
            }
        }
        if !returned && !results.is_empty() {
            return cur.err("missing `return`");
        }
        Ok(())
    }

    fn refs(&self, cur: &mut Cursor<'_>) -> Result<Vec<ValueId>, ParseError> {
        let mut out = Vec::new();
        if cur.peek() != Some('%') {
            return Ok(out);
        }
        loop {
            let r = cur.value_ref()?;
            out.push(self.lookup(cur, &r)?);
            if !cur.eat(',') {
                return Ok(out);
            }
        }
    }

    fn ret(&mut self, cur: &mut Cursor<'_>, results: &[Declared]) -> Result<(), ParseError> {
        let vals = self.refs(cur)?;
        if vals.len() != results.len() {
            return cur.err(format!(
                "`return` gives {} values but the signature declares {} results",
                vals.len(),
                results.len()
            ));
        }
        for (i, ((name, ty), v)) in results.iter().zip(vals).enumerate() {
            let actual = self.g.value_type(v);
            if actual != ty {
                return cur.err(format!(
                    "result {i} is declared {ty} but the returned value has type {actual}"
                ));
            }
            self.g
                .add_output(name.clone().unwrap_or_else(|| format!("out{i}")), v);
        }
        cur.end_line("`return`")
    }

    fn node(&mut self, cur: &mut Cursor<'_>) -> Result<(), ParseError> {
        let line = cur.line();
        let at = |message: String| ParseError { line, message };
        let mut defs = vec![cur.value_ref()?];
        while cur.eat(',') {
            defs.push(cur.value_ref()?);
        }
        cur.expect('=', "after the defined values")?;
        let Some(opname) = cur.ident() else {
            let found = cur.describe_next();
            return cur.err(format!("expected an op name, found {found}"));
        };
        let (op, inputs) = if opname == "const" {
            (Op::Const(tensor_literal(cur, None)?), Vec::new())
        } else {
            let inputs = self.refs(cur)?;
            let mut attrs = Attrs::parse(cur)?;
            let op = op_from_text(opname, &mut attrs).map_err(at)?;
            attrs.finish(opname).map_err(at)?;
            (op, inputs)
        };
        let types = if cur.eat(':') {
            let mut ts = vec![tensor_type(cur)?];
            while cur.eat(',') {
                ts.push(tensor_type(cur)?);
            }
            ts
        } else {
            self.implied_types(&op, &inputs).map_err(at)?
        };
        if types.len() != defs.len() {
            let n = defs.len();
            return Err(at(format!(
                "`{opname}` has {} output types but {n} values are defined",
                types.len()
            )));
        }
        let name = if cur.peek() == Some('"') {
            cur.string()?
        } else {
            String::new()
        };
        cur.end_line("the node")?;
        let outs = self.g.push_node(name, op, inputs, types);
        for (r, v) in defs.into_iter().zip(outs) {
            self.define(cur, r, v).map_err(|e| at(e.message))?;
        }
        Ok(())
    }

    /// Output types when the text leaves them out: a constant's own type, else inference.
    fn implied_types(&self, op: &Op, inputs: &[ValueId]) -> Result<Vec<TensorType>, String> {
        if let Op::Const(t) = op {
            return Ok(vec![TensorType::fixed(t.dtype(), t.shape())]);
        }
        let tys: Vec<&TensorType> = inputs.iter().map(|v| self.g.value_type(*v)).collect();
        infer(op, &tys)
            .map_err(|e| format!("cannot infer the output types ({e}); write them after `:`"))
    }
}
