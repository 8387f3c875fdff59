//! A parsed PTX module: its entries, their signatures, and the resolved
//! instruction lists the interpreter runs.

use crate::error::ParseError;
use crate::inst::{Inst, Reg};
use crate::types::Type;

/// One declared kernel parameter.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ParamDecl {
    pub name: String,
    pub ty: Type,
}

/// The signature of one `.entry`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EntrySig {
    pub name: String,
    pub params: Vec<ParamDecl>,
}

/// One entry ready to run: registers are indices into `reg_names`/`reg_types`
/// and branch targets are instruction indices.
#[derive(Clone, Debug)]
pub(crate) struct Entry {
    pub sig: EntrySig,
    pub insts: Vec<Inst>,
    pub reg_names: Vec<String>,
    /// Per register, the mask of its declared width; writes are masked so a
    /// register never holds bits beyond its width.
    pub reg_masks: Vec<u64>,
    /// Size of the CTA's static shared window (all `.shared` arrays).
    pub shared_bytes: u64,
    /// The registers of vector operands (`{%r1, %r2, ...}`), which
    /// instructions name by their start index so `Op` stays small.
    pub lists: Vec<Reg>,
}

/// A parsed PTX module.
#[derive(Clone, Debug)]
pub struct Module {
    pub(crate) entries: Vec<Entry>,
}

impl Module {
    /// Parses and checks PTX text (see the crate docs for the dialect).
    pub fn parse(text: &str) -> Result<Module, ParseError> {
        crate::parse::parse_module(text)
    }

    /// The entries in source order.
    pub fn entries(&self) -> impl ExactSizeIterator<Item = &EntrySig> {
        self.entries.iter().map(|e| &e.sig)
    }

    pub(crate) fn entry(&self, name: &str) -> Option<&Entry> {
        self.entries.iter().find(|e| e.sig.name == name)
    }
}
