//! The experiment's models, shaped as DIALS/dxtbx models an experiment, each
//! with its resolver: from the user's configuration (nanoBragg's units,
//! optional values) to resolved values in SI units with nanoBragg's
//! auto-selection rules applied (spec-a-core "Auto-selection rules").
//!
//! - [`beam`]: wavelength, direction, polarization, fluence, sources
//!   (divergence and dispersion, or a source file);
//! - [`detector`]: pixels, ROI, axes, beam centre, pivot, distance, mask;
//! - [`goniometer`]: the spindle axis;
//! - [`scan`]: phi start, oscillation and steps;
//! - [`crystal`]: cell or orientation matrix, misset, N, shape, mosaic
//!   domains, structure factors;
//! - [`sampling`]: subpixels and sensor layers;
//! - [`convention`]: the axes a detector convention fixes.
//!
//! `setup::resolve` runs them in order and flattens the result for the
//! engines.

pub mod beam;
pub mod convention;
pub mod crystal;
pub mod detector;
pub mod goniometer;
pub mod sampling;
pub mod scan;
