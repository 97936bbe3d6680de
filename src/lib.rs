//! braggrun: a differentiable nanoBragg-class simulator (CPU and CUDA) and an
//! experiment runner that leaves verifiable evidence bundles.

#![warn(missing_docs)]

pub mod cli;
pub mod engine;
pub(crate) mod evidence;
pub mod experiment;
pub mod io;
pub mod physics;
pub mod platform;
pub mod refine;

/// The braggrun version baked in at build time.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");
