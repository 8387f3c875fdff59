//! The epilogue of a fused linear layer ([`crate::Op::Linear`]): what happens to each
//! element of `x·w` before it is stored. Each part is typed, so a state the kernels cannot
//! run (an arbitrary unary op as activation, a residual combined by subtraction) cannot be
//! written down.

use crate::UnaryOp;
use serde::{Deserialize, Serialize};

/// The element-wise work fused after a linear layer's product, in this order: bias, then
/// activation, then residual.
///
/// ```
/// use kiln_ir::{Activation, Epilogue, Residual};
/// let e = Epilogue { bias: true, activation: Some(Activation::Gelu), residual: Some(Residual::Add) };
/// assert_eq!(e.inputs(), 4); // x, w, bias, residual
/// assert_eq!(Epilogue::default().inputs(), 2);
/// ```
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize,
)]
pub struct Epilogue {
    /// A bias of shape `[N]` is added along the last axis (the third input).
    pub bias: bool,
    /// Applied after the bias.
    pub activation: Option<Activation>,
    /// Combined with a tensor of the output's shape (the last input), after the activation.
    pub residual: Option<Residual>,
}

impl Epilogue {
    /// How many inputs the linear op takes: `x`, `w`, then the bias and the residual when
    /// present.
    pub fn inputs(self) -> usize {
        2 + usize::from(self.bias) + usize::from(self.residual.is_some())
    }
}

/// The activations a linear layer's epilogue can apply: those models put after a
/// projection (the fused GELU forms, SiLU, ReLU).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Activation {
    /// [`UnaryOp::Relu`].
    Relu,
    /// [`UnaryOp::Gelu`] (erf form).
    Gelu,
    /// [`UnaryOp::GeluTanh`].
    GeluTanh,
    /// [`UnaryOp::Silu`].
    Silu,
}

impl Activation {
    /// Every activation.
    pub const ALL: &'static [Activation] = &[
        Activation::Relu,
        Activation::Gelu,
        Activation::GeluTanh,
        Activation::Silu,
    ];

    /// The unary op this activation computes (its definition).
    pub fn unary(self) -> UnaryOp {
        match self {
            Activation::Relu => UnaryOp::Relu,
            Activation::Gelu => UnaryOp::Gelu,
            Activation::GeluTanh => UnaryOp::GeluTanh,
            Activation::Silu => UnaryOp::Silu,
        }
    }

    /// The activation that computes `u`, if there is one.
    ///
    /// ```
    /// use kiln_ir::{Activation, UnaryOp};
    /// assert_eq!(Activation::from_unary(UnaryOp::Silu), Some(Activation::Silu));
    /// assert_eq!(Activation::from_unary(UnaryOp::Exp), None);
    /// ```
    pub fn from_unary(u: UnaryOp) -> Option<Activation> {
        Activation::ALL.iter().copied().find(|a| a.unary() == u)
    }

    /// The text name (the unary op's: `gelu`, `gelu_tanh`, …).
    pub fn name(self) -> &'static str {
        self.unary().name()
    }

    /// The activation with this text name.
    pub fn from_name(s: &str) -> Option<Activation> {
        UnaryOp::from_name(s).and_then(Activation::from_unary)
    }
}

/// How a linear layer's result is combined with its residual input.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Residual {
    /// `y + r`: a residual connection.
    Add,
    /// `y · r`: the gated product of a GLU (`silu(x·Wg) · (x·Wu)`).
    Mul,
}

impl Residual {
    /// The binary op (its definition).
    pub fn binary(self) -> crate::BinaryOp {
        match self {
            Residual::Add => crate::BinaryOp::Add,
            Residual::Mul => crate::BinaryOp::Mul,
        }
    }

    /// The text name (`add`, `mul`).
    pub fn name(self) -> &'static str {
        self.binary().name()
    }

    /// The residual combination with this text name.
    pub fn from_name(s: &str) -> Option<Residual> {
        [Residual::Add, Residual::Mul]
            .into_iter()
            .find(|r| r.name() == s)
    }
}
