//! The parameter values a render evaluates at, in the scalar it computes in:
//! the base point plus shifts, derivative directions seeded as dual numbers
//! (forward mode), and the real part and derivative components read back.
//! Shared by the CPU engine and the CUDA host, which builds the same model.

use crate::engine::{EngineError, RenderOptions};
use crate::physics::params::{Param, ParamValues};
use crate::physics::scalar::Real;
use crate::physics::Simulation;
use nalgebra::{Const, U1};
use num_dual::{DualSVec32, DualSVec64};

/// Largest number of derivative directions carried in one pass; more are
/// rendered in several passes.
pub const MAX_DIRECTIONS: usize = 8;

/// Real part and derivative components of a rendered scalar.
pub trait Extract: Real {
    /// The real part as f64.
    fn re64(&self) -> f64 {
        self.val()
    }
    /// Derivative component `i` as f64 (0 for plain floats).
    fn eps64(&self, _i: usize) -> f64 {
        0.0
    }
    /// Seed `x` with derivative direction `dir` (ignored for plain floats).
    fn seeded(x: f64, _dir: usize) -> Self {
        Self::cst(x)
    }
    /// Append the real part, then derivative components 0..nd.
    fn push_parts(&self, buf: &mut Vec<f64>, nd: usize) {
        buf.push(self.re64());
        for i in 0..nd {
            buf.push(self.eps64(i));
        }
    }
}
impl Extract for f64 {}
impl Extract for f32 {}
impl<const N: usize> Extract for DualSVec64<N> {
    fn eps64(&self, i: usize) -> f64 {
        self.eps.unwrap_generic(Const::<N>, U1)[i]
    }
    fn seeded(x: f64, dir: usize) -> Self {
        DualSVec64::<N>::from_re(x).derivative(dir)
    }
    // the derivative vector taken out once, not once per component (the
    // GPU's model with 6 directions has 11000 components)
    fn push_parts(&self, buf: &mut Vec<f64>, nd: usize) {
        buf.push(self.re);
        let eps = self.eps.unwrap_generic(Const::<N>, U1);
        buf.extend((0..nd).map(|i| eps[i]));
    }
}
impl<const N: usize> Extract for DualSVec32<N> {
    fn eps64(&self, i: usize) -> f64 {
        self.eps.unwrap_generic(Const::<N>, U1)[i] as f64
    }
    fn seeded(x: f64, dir: usize) -> Self {
        DualSVec32::<N>::from_re(x as f32).derivative(dir)
    }
}

/// Parameter values in T with `dirs[i]` seeded as derivative direction i.
pub fn seeded_values<T: Extract>(base: &ParamValues<f64>, dirs: &[Param]) -> ParamValues<T> {
    let mut pv = ParamValues::<T>::from_f64(base);
    for (i, p) in dirs.iter().enumerate() {
        pv.seed(*p, T::seeded(base.get(*p), i));
    }
    pv
}

/// The parameter values a render uses: the base point plus `opts.shifts`,
/// after checking that every parameter it names (derivative or shift)
/// applies to this simulation.
pub fn base_with_shifts(
    sim: &Simulation,
    opts: &RenderOptions,
) -> Result<ParamValues<f64>, EngineError> {
    for p in opts
        .derivatives
        .iter()
        .chain(opts.shifts.iter().map(|(p, _)| p))
    {
        sim.base_value(*p)
            .map_err(|e| EngineError::Failed(e.to_string()))?;
    }
    let mut base = sim.setup.base_values();
    for (p, d) in &opts.shifts {
        base.set(*p, base.get(*p) + d);
    }
    Ok(base)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `push_parts` writes what `re64` and `eps64` give, component by
    /// component, for plain floats and for duals (the GPU model's layout).
    #[test]
    fn push_parts_matches_the_components() {
        let mut x = DualSVec64::<3>::seeded(2.5, 1);
        x = x * x + DualSVec64::<3>::seeded(-0.75, 2);
        assert!(x.eps64(1) != 0.0 && x.eps64(2) != 0.0);
        let mut got = vec![];
        x.push_parts(&mut got, 3);
        assert_eq!(got, vec![x.re64(), x.eps64(0), x.eps64(1), x.eps64(2)]);
        let mut plain = vec![];
        1.25f64.push_parts(&mut plain, 2);
        assert_eq!(plain, vec![1.25, 0.0, 0.0]);
    }
}
