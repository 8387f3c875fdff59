//! Symbolic evaluation of shape computations.
