//! PTX text to [`Module`]: the module header, entry signatures, register
//! declarations, labels, guards and branches. Instruction bodies are decoded
//! by `opcode`; this module resolves labels once an entry's body is read.

use std::collections::HashMap;

use crate::error::ParseError;
use crate::inst::{Inst, Op, Reg};
use crate::lex::{lex, Tok, Token};
use crate::module::{Entry, EntrySig, Module, ParamDecl};
use crate::opcode::decode;
use crate::operand::{parse_int, RawOperand, Scope};
use crate::tensor;
use crate::types::Type;

/// Declaring more registers than this in one `.reg` is surely a mistake.
const MAX_REGS: u32 = 1 << 16;
/// CUDA's limit on static shared memory per CTA (48 KiB).
const MAX_SHARED: u64 = 48 * 1024;
/// Element types a `.shared` array may be declared with.
const SHARED_TYPES: &[Type] = &[
    Type::B8,
    Type::U8,
    Type::B16,
    Type::U16,
    Type::B32,
    Type::U32,
    Type::S32,
    Type::F32,
    Type::B64,
    Type::U64,
    Type::F64,
];

pub(crate) fn parse_module(text: &str) -> Result<Module, ParseError> {
    let mut p = Parser {
        toks: lex(text)?,
        pos: 0,
    };
    let mut entries: Vec<Entry> = Vec::new();
    let mut header = Header::default();
    while let Some(t) = p.toks.get(p.pos).cloned() {
        p.pos += 1;
        match word(&t) {
            Some(".version" | ".target" | ".address_size") if !entries.is_empty() => {
                return Err(ParseError::new(t.line, "module directive after an entry"));
            }
            Some(".version") => header.version(&mut p, t.line)?,
            Some(".target") => header.target(&mut p, t.line)?,
            Some(".address_size") => header.address_size(&mut p, t.line)?,
            Some(".visible") => {
                p.expect_word(".entry")?;
                entries.push(p.entry(&entries)?);
            }
            Some(".entry") => entries.push(p.entry(&entries)?),
            _ => {
                return Err(ParseError::new(
                    t.line,
                    format!("unexpected '{}'", show(&t)),
                ))
            }
        }
    }
    header.check(p.last_line())?;
    Ok(Module { entries })
}

fn word(t: &Token) -> Option<&str> {
    match &t.tok {
        Tok::Word(w) => Some(w),
        Tok::Punct(_) => None,
    }
}

fn show(t: &Token) -> String {
    match &t.tok {
        Tok::Word(w) => w.clone(),
        Tok::Punct(c) => c.to_string(),
    }
}

/// Which module directives were seen; all three are required once.
#[derive(Default)]
struct Header {
    version: bool,
    target: bool,
    address_size: bool,
}

impl Header {
    fn version(&mut self, p: &mut Parser, line: u32) -> Result<(), ParseError> {
        let v = p.any_word()?;
        let ok =
            matches!(v.split_once('.'), Some(("7" | "8", minor)) if parse_int(minor).is_some());
        once(&mut self.version, ok, line, &format!(".version {v}"))
    }

    fn target(&mut self, p: &mut Parser, line: u32) -> Result<(), ParseError> {
        loop {
            let t = p.any_word()?;
            let ok = matches!(t.strip_prefix("sm_"), Some(n) if n.trim_end_matches('a').parse::<u32>().is_ok());
            if !ok {
                return Err(ParseError::new(line, format!("unsupported target '{t}'")));
            }
            if !p.eat(',') {
                break;
            }
        }
        once(&mut self.target, true, line, ".target")
    }

    fn address_size(&mut self, p: &mut Parser, line: u32) -> Result<(), ParseError> {
        let ok = p.any_word()? == "64";
        once(
            &mut self.address_size,
            ok,
            line,
            ".address_size (only 64 is supported)",
        )
    }

    fn check(&self, line: u32) -> Result<(), ParseError> {
        if self.version && self.target && self.address_size {
            return Ok(());
        }
        Err(ParseError::new(
            line,
            "module needs .version, .target and .address_size 64",
        ))
    }
}

fn once(seen: &mut bool, ok: bool, line: u32, what: &str) -> Result<(), ParseError> {
    if !ok || *seen {
        let why = if ok { "repeated" } else { "unsupported" };
        return Err(ParseError::new(line, format!("{why} {what}")));
    }
    *seen = true;
    Ok(())
}

struct Parser {
    toks: Vec<Token>,
    pos: usize,
}

/// Registers and labels of the entry being parsed.
#[derive(Default)]
struct Body {
    regs: HashMap<String, (Reg, Type)>,
    reg_names: Vec<String>,
    reg_masks: Vec<u64>,
    labels: HashMap<String, usize>,
    /// (instruction index, label, line) of each branch, resolved at the end.
    branches: Vec<(usize, String, u32)>,
    insts: Vec<Inst>,
    /// Shared arrays by name: their offset in the CTA's shared window.
    shared: HashMap<String, u64>,
    /// Bytes of the shared window laid out so far.
    shared_bytes: u64,
    /// Registers of vector operands (see `Entry::lists`).
    lists: Vec<Reg>,
}

impl Parser {
    fn last_line(&self) -> u32 {
        self.toks.last().map_or(1, |t| t.line)
    }

    fn next(&mut self) -> Result<Token, ParseError> {
        let t = self.toks.get(self.pos).cloned();
        self.pos += 1;
        t.ok_or_else(|| ParseError::new(self.last_line(), "unexpected end of input"))
    }

    fn peek_punct(&self, c: char) -> bool {
        matches!(self.toks.get(self.pos), Some(Token { tok: Tok::Punct(d), .. }) if *d == c)
    }

    fn eat(&mut self, c: char) -> bool {
        let hit = self.peek_punct(c);
        self.pos += usize::from(hit);
        hit
    }

    fn expect(&mut self, c: char) -> Result<u32, ParseError> {
        let t = self.next()?;
        if t.tok != Tok::Punct(c) {
            return Err(ParseError::new(
                t.line,
                format!("expected '{c}', got '{}'", show(&t)),
            ));
        }
        Ok(t.line)
    }

    fn any_word(&mut self) -> Result<String, ParseError> {
        let t = self.next()?;
        word(&t)
            .map(str::to_string)
            .ok_or_else(|| ParseError::new(t.line, format!("expected a word, got '{}'", show(&t))))
    }

    fn expect_word(&mut self, w: &str) -> Result<(), ParseError> {
        let line = self.toks.get(self.pos).map_or(self.last_line(), |t| t.line);
        let got = self.any_word()?;
        if got != w {
            return Err(ParseError::new(
                line,
                format!("expected '{w}', got '{got}'"),
            ));
        }
        Ok(())
    }

    fn type_word(&mut self) -> Result<Type, ParseError> {
        let line = self.toks.get(self.pos).map_or(self.last_line(), |t| t.line);
        let w = self.any_word()?;
        w.strip_prefix('.')
            .and_then(Type::from_suffix)
            .filter(|t| !matches!(t, Type::F16 | Type::Bf16 | Type::B8 | Type::U8 | Type::S8))
            .ok_or_else(|| ParseError::new(line, format!("unsupported type '{w}'")))
    }

    /// `NAME ( params ) { body }` after `.entry`.
    fn entry(&mut self, done: &[Entry]) -> Result<Entry, ParseError> {
        let line = self.toks.get(self.pos).map_or(self.last_line(), |t| t.line);
        let name = self.any_word()?;
        if done.iter().any(|e| e.sig.name == name) {
            return Err(ParseError::new(line, format!("duplicate entry '{name}'")));
        }
        let params = self.params()?;
        let sig = EntrySig { name, params };
        self.expect('{')?;
        let mut body = Body::default();
        while !self.eat('}') {
            self.statement(&mut body, &sig.params)?;
        }
        resolve_branches(&mut body)?;
        Ok(Entry {
            sig,
            insts: body.insts,
            reg_names: body.reg_names,
            reg_masks: body.reg_masks,
            shared_bytes: body.shared_bytes,
            lists: body.lists,
        })
    }

    fn params(&mut self) -> Result<Vec<ParamDecl>, ParseError> {
        self.expect('(')?;
        let mut params: Vec<ParamDecl> = Vec::new();
        while !self.eat(')') {
            if !params.is_empty() {
                self.expect(',')?;
            }
            self.expect_word(".param")?;
            let ty = self.type_word()?;
            let line = self.toks.get(self.pos).map_or(self.last_line(), |t| t.line);
            let name = self.any_word()?;
            if ty == Type::Pred || ty.bits() < 32 || params.iter().any(|p| p.name == name) {
                return Err(ParseError::new(
                    line,
                    format!("bad or duplicate param '{name}'"),
                ));
            }
            params.push(ParamDecl { name, ty });
        }
        Ok(params)
    }

    fn statement(&mut self, body: &mut Body, params: &[ParamDecl]) -> Result<(), ParseError> {
        let t = self.next()?;
        match &t.tok {
            Tok::Word(w) if w == ".reg" => self.reg_decl(body),
            Tok::Word(w) if w == ".shared" => self.shared_decl(body, params, t.line),
            Tok::Word(w) if w.starts_with('.') => {
                Err(ParseError::new(t.line, format!("unknown directive '{w}'")))
            }
            Tok::Word(w) if self.peek_punct(':') => {
                self.pos += 1;
                let at = body.insts.len();
                match body.labels.insert(w.clone(), at) {
                    Some(_) => Err(ParseError::new(t.line, format!("duplicate label '{w}'"))),
                    None => Ok(()),
                }
            }
            Tok::Word(w) => self.instruction(body, params, None, w.clone(), t.line),
            Tok::Punct('@') => {
                let guard = self.guard(body)?;
                let line = self.toks.get(self.pos).map_or(t.line, |t| t.line);
                let op = self.any_word()?;
                self.instruction(body, params, Some(guard), op, line)
            }
            Tok::Punct(c) => Err(ParseError::new(t.line, format!("unexpected '{c}'"))),
        }
    }

    /// `.reg .TYPE %a<N>, %b;` after `.reg`.
    fn reg_decl(&mut self, body: &mut Body) -> Result<(), ParseError> {
        let ty = self.type_word()?;
        loop {
            let line = self.toks.get(self.pos).map_or(self.last_line(), |t| t.line);
            let name = self.any_word()?;
            if !name.starts_with('%') || name.contains('.') {
                return Err(ParseError::new(line, format!("bad register name '{name}'")));
            }
            if self.eat('<') {
                let n = self.any_word()?;
                let n = n.parse::<u32>().ok().filter(|&n| n > 0 && n <= MAX_REGS);
                let n = n.ok_or_else(|| ParseError::new(line, "bad register count"))?;
                self.expect('>')?;
                for i in 0..n {
                    declare(body, format!("{name}{i}"), ty, line)?;
                }
            } else {
                declare(body, name, ty, line)?;
            }
            if !self.eat(',') {
                break;
            }
        }
        self.expect(';').map(drop)
    }

    /// `[.align N] .TYPE NAME[COUNT];` after `.shared`. Arrays are laid out
    /// in declaration order from offset 0 of the CTA's shared window, each
    /// at its alignment (natural alignment of the element type by default).
    fn shared_decl(
        &mut self,
        body: &mut Body,
        params: &[ParamDecl],
        line: u32,
    ) -> Result<(), ParseError> {
        let mut w = self.any_word()?;
        let mut align = None;
        if w == ".align" {
            let a = self.any_word()?;
            let a = parse_int(&a).filter(|&a| (1..=256).contains(&a) && a.count_ones() == 1);
            align = Some(a.ok_or_else(|| ParseError::new(line, "bad .shared alignment"))? as u64);
            w = self.any_word()?;
        }
        let ty = w
            .strip_prefix('.')
            .and_then(Type::from_suffix)
            .filter(|t| SHARED_TYPES.contains(t))
            .ok_or_else(|| ParseError::new(line, format!("unsupported .shared type '{w}'")))?;
        let name = self.any_word()?;
        self.expect('[')?;
        let count = self.any_word()?;
        self.expect(']')?;
        self.expect(';')?;
        let taken = body.shared.contains_key(&name)
            || body.regs.contains_key(&name)
            || params.iter().any(|p| p.name == name);
        if taken || name.starts_with('%') {
            return Err(ParseError::new(
                line,
                format!("bad or duplicate shared array '{name}'"),
            ));
        }
        let count = parse_int(&count)
            .filter(|&c| c > 0 && c <= i128::from(MAX_SHARED))
            .ok_or_else(|| {
                ParseError::new(
                    line,
                    format!("bad shared array size '{count}' (static sizes only)"),
                )
            })?;
        let align = align.unwrap_or(ty.bytes()).max(ty.bytes());
        let at = body.shared_bytes.div_ceil(align) * align;
        let end = at + count as u64 * ty.bytes();
        if end > MAX_SHARED {
            return Err(ParseError::new(line, "static shared memory exceeds 48 KiB"));
        }
        body.shared.insert(name, at);
        body.shared_bytes = end;
        Ok(())
    }

    /// `%p` or `!%p` after `@`.
    fn guard(&mut self, body: &Body) -> Result<(Reg, bool), ParseError> {
        let negate = self.eat('!');
        let line = self.toks.get(self.pos).map_or(self.last_line(), |t| t.line);
        let name = self.any_word()?;
        match body.regs.get(&name) {
            Some(&(r, Type::Pred)) => Ok((r, !negate)),
            _ => Err(ParseError::new(
                line,
                format!("guard '{name}' is not a declared .pred register"),
            )),
        }
    }

    fn instruction(
        &mut self,
        body: &mut Body,
        params: &[ParamDecl],
        guard: Option<(Reg, bool)>,
        opcode: String,
        line: u32,
    ) -> Result<(), ParseError> {
        let ops = self.operands()?;
        let op = match opcode.as_str() {
            "bra" | "bra.uni" => self.branch(body, &ops, line)?,
            "ret" | "exit" if ops.is_empty() => Op::Exit,
            _ => {
                let scope = Scope {
                    regs: &body.regs,
                    params,
                    shared: &body.shared,
                    line,
                };
                match tensor::decode(&opcode, &ops, &scope, &mut body.lists)? {
                    Some(op) => op,
                    None => decode(&opcode, &ops, &scope)?,
                }
            }
        };
        body.insts.push(Inst { guard, op, line });
        Ok(())
    }

    fn branch(&mut self, body: &mut Body, ops: &[RawOperand], line: u32) -> Result<Op, ParseError> {
        let [RawOperand::Word(label)] = ops else {
            return Err(ParseError::new(line, "bra takes one label"));
        };
        body.branches.push((body.insts.len(), label.clone(), line));
        Ok(Op::Bra { target: usize::MAX })
    }

    /// Comma-separated operands up to and including `;`.
    fn operands(&mut self) -> Result<Vec<RawOperand>, ParseError> {
        let mut ops = Vec::new();
        if self.eat(';') {
            return Ok(ops);
        }
        loop {
            ops.push(self.operand()?);
            if self.eat(';') {
                return Ok(ops);
            }
            self.expect(',')?;
        }
    }

    fn operand(&mut self) -> Result<RawOperand, ParseError> {
        if self.eat('{') {
            let mut words = vec![self.any_word()?];
            while self.eat(',') {
                words.push(self.any_word()?);
            }
            self.expect('}')?;
            return Ok(RawOperand::List(words));
        }
        if !self.eat('[') {
            let line = self.toks.get(self.pos).map_or(self.last_line(), |t| t.line);
            let w = self.any_word()?;
            if self.peek_punct('|') {
                return Err(ParseError::new(
                    line,
                    format!("the predicate output form '{w}|...' is not supported"),
                ));
            }
            return Ok(RawOperand::Word(w));
        }
        let base = self.any_word()?;
        let mut offset = 0;
        if self.eat('+') {
            let line = self.toks.get(self.pos).map_or(self.last_line(), |t| t.line);
            let w = self.any_word()?;
            offset = parse_int(&w)
                .and_then(|v| i64::try_from(v).ok())
                .ok_or_else(|| ParseError::new(line, format!("bad address offset '{w}'")))?;
        }
        self.expect(']')?;
        Ok(RawOperand::Addr { base, offset })
    }
}

fn declare(body: &mut Body, name: String, ty: Type, line: u32) -> Result<(), ParseError> {
    let idx = Reg::try_from(body.reg_names.len())
        .map_err(|_| ParseError::new(line, "too many registers"))?;
    if body.regs.insert(name.clone(), (idx, ty)).is_some() {
        return Err(ParseError::new(
            line,
            format!("register '{name}' declared twice"),
        ));
    }
    body.reg_names.push(name);
    body.reg_masks.push(ty.mask());
    Ok(())
}

fn resolve_branches(body: &mut Body) -> Result<(), ParseError> {
    for (at, label, line) in &body.branches {
        let target = *body.labels.get(label).ok_or_else(|| {
            ParseError::new(*line, format!("branch to undefined label '{label}'"))
        })?;
        body.insts[*at].op = Op::Bra { target };
    }
    Ok(())
}
