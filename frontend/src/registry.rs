//! The opset-aware op registry: each ONNX op type maps to handlers, each for a range of
//! default-domain opset versions. Adding an op family is one file under `ops/` plus one
//! line in `ops::register_all`.

use crate::cx::{Cx, Val, R};
use crate::node::N;
use kiln_ir::{BinaryOp, Op, UnaryOp};
use std::collections::BTreeMap;
use std::sync::OnceLock;

/// A handler lowers one ONNX node into core ops, returning one value per ONNX output.
pub(crate) type Handler = Box<dyn Fn(&mut Cx, &N) -> R<Vec<Val>> + Send + Sync>;

/// One supported ONNX op and the opset versions it is imported at (for `kiln ops`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OpSupport {
    /// The ONNX op type.
    pub name: String,
    /// First supported opset version.
    pub since: i64,
    /// Last supported opset version, or `None` for every later one.
    pub until: Option<i64>,
}

struct Entry {
    since: i64,
    until: Option<i64>,
    handler: Handler,
}

/// Op type to handlers.
#[derive(Default)]
pub(crate) struct Registry {
    ops: BTreeMap<&'static str, Vec<Entry>>,
}

/// Why a lookup failed.
pub(crate) enum Missing {
    /// The op type is unknown.
    Op,
    /// The op is known at other opsets, described.
    Opset(String),
}

impl Registry {
    /// Registers `name` from opset `since` on.
    pub(crate) fn add(
        &mut self,
        name: &'static str,
        since: i64,
        h: impl Fn(&mut Cx, &N) -> R<Vec<Val>> + Send + Sync + 'static,
    ) {
        self.add_range(name, since, None, h);
    }

    /// Registers `name` for opsets `since..=until`.
    pub(crate) fn add_range(
        &mut self,
        name: &'static str,
        since: i64,
        until: Option<i64>,
        h: impl Fn(&mut Cx, &N) -> R<Vec<Val>> + Send + Sync + 'static,
    ) {
        self.ops.entry(name).or_default().push(Entry {
            since,
            until,
            handler: Box::new(h),
        });
    }

    /// Registers an elementwise unary op.
    pub(crate) fn unary(&mut self, name: &'static str, since: i64, op: UnaryOp) {
        self.add(name, since, move |cx, n| {
            Ok(vec![cx.emit1("", Op::Unary(op), &[n.input(0)?])?])
        });
    }

    /// Registers a broadcasting binary op.
    pub(crate) fn binary(&mut self, name: &'static str, since: i64, op: BinaryOp) {
        self.add(name, since, move |cx, n| {
            Ok(vec![cx.emit1(
                "",
                Op::Binary(op),
                &[n.input(0)?, n.input(1)?],
            )?])
        });
    }

    /// The handler for `name` at `opset`.
    pub(crate) fn find(&self, name: &str, opset: i64) -> Result<&Handler, Missing> {
        let entries = self.ops.get(name).ok_or(Missing::Op)?;
        entries
            .iter()
            .find(|e| e.since <= opset && e.until.is_none_or(|u| opset <= u))
            .map(|e| &e.handler)
            .ok_or_else(|| {
                Missing::Opset(
                    entries
                        .iter()
                        .map(|e| range_text(e.since, e.until))
                        .collect::<Vec<_>>()
                        .join(", "),
                )
            })
    }

    /// Every registered op and version range, sorted by name.
    pub(crate) fn list(&self) -> Vec<OpSupport> {
        self.ops
            .iter()
            .flat_map(|(name, es)| {
                es.iter().map(|e| OpSupport {
                    name: name.to_string(),
                    since: e.since,
                    until: e.until,
                })
            })
            .collect()
    }
}

fn range_text(since: i64, until: Option<i64>) -> String {
    match until {
        Some(u) => format!("{since}..={u}"),
        None => format!("{since}+"),
    }
}

/// The registry with every op family registered.
pub(crate) fn registry() -> &'static Registry {
    static REG: OnceLock<Registry> = OnceLock::new();
    REG.get_or_init(|| {
        let mut r = Registry::default();
        crate::ops::register_all(&mut r);
        r
    })
}

/// Every ONNX op kiln imports, with its opset range.
pub fn supported_ops() -> Vec<OpSupport> {
    registry().list()
}
