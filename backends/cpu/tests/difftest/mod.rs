//! Shared parts of the differential tests: a seeded generator of random graphs and inputs,
//! and the output comparison.

pub mod compare;
pub mod data;
pub mod gen;
pub mod rng;
pub mod symbolic;
