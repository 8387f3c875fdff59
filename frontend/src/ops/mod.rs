//! ONNX op families, one file each (style H11). Adding a family is one file here plus one
//! line in [`register_all`].

mod activation;
mod attention;
pub(crate) mod conv;
mod einsum;
mod elementwise;
mod genai;
pub(crate) mod linalg;
mod loss;
mod movement;
pub(crate) mod nbits;
mod norm;
mod pool;
mod qlinear;
pub(crate) mod quant;
mod reduce;
mod rms;
mod rotary;
pub(crate) mod shape;

use crate::registry::Registry;

/// Registers every family.
pub(crate) fn register_all(reg: &mut Registry) {
    elementwise::register(reg);
    activation::register(reg);
    reduce::register(reg);
    shape::register(reg);
    movement::register(reg);
    linalg::register(reg);
    norm::register(reg);
    quant::register(reg);
    conv::register(reg);
    attention::register(reg);
    rotary::register(reg);
    rms::register(reg);
    loss::register(reg);
    pool::register(reg);
    einsum::register(reg);
    qlinear::register(reg);
    nbits::register(reg);
    genai::register(reg);
}
