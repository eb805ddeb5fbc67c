//! Exact tensor parallelism: a group of members (boards) that together hold a stage's layers,
//! each a slice of every weight matrix, and compute each token together with results
//! bit-identical to one node.
//!
//! - [`slicing`]: the plan (which heads and rows each member holds), pure arithmetic.

pub mod slicing;

#[cfg(test)]
mod slicing_tests;

pub use slicing::{
    GroupPlan, LayerShape, LayerSlices, MemberLayerSlice, SliceError, SliceOptions, WoPlacement,
    split_rows,
};
