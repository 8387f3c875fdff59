//! The reference interpreter: the definition of every op's semantics.
