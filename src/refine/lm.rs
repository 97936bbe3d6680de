//! The Levenberg-Marquardt iteration on nalgebra, independent of the engine:
//! an [`Evaluator`] gives the model values and their Jacobian at a point;
//! [`levenberg_marquardt`] minimises least squares or the Poisson deviance
//! (Fisher scoring, IRLS weights 1/model) within box bounds.
//!
//! The step solves `(Ã + λ I) δ̃ = g̃` with `Ã = S A S`, `g̃ = S g`,
//! `S = diag(A)^-1/2` (Marquardt's scaling: invariant to the units of the
//! parameters), `A = Jᵀ W J`, `g = Jᵀ W (y - m)`; the trial point is clamped
//! into the bounds, the gain ratio of actual to predicted loss reduction
//! decides acceptance, and λ follows Marquardt's rule (÷10 on success, x10
//! on failure) or Nielsen's ([`Damping`]). A trial point where the model is
//! not finite (outside its domain, e.g. a negative cell edge after a long
//! step from far away) is a failed step, not an error.

use super::{Objective, RefineError};
use nalgebra::{DMatrix, DVector};
use serde::Serialize;

/// Model values over the fitted pixels and their derivatives, one column per
/// parameter (`jac[j][i]` = d model_i / d x_j).
#[derive(Debug, Clone)]
pub struct Eval {
    /// Model values m_i over the fitted pixels, in the order of the
    /// observations.
    pub model: Vec<f64>,
    /// The Jacobian by columns: `jac[j][i]` = ∂m_i/∂x_j.
    pub jac: Vec<Vec<f64>>,
}

/// Something that evaluates the model and its Jacobian.
pub trait Evaluator {
    /// Model values and Jacobian at `x`.
    fn eval(&mut self, x: &[f64]) -> Result<Eval, RefineError>;
    /// Model values alone at `x` (the geodesic acceleration's finite
    /// difference); the same function as [`Evaluator::eval`]'s values.
    fn value(&mut self, x: &[f64]) -> Result<Vec<f64>, RefineError> {
        Ok(self.eval(x)?.model)
    }
}

/// How λ changes after a step.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Damping {
    /// Nielsen (1999): λ x max(1/3, 1 - (2ρ - 1)³) after a success, x ν
    /// (ν = 2, 4, 8, ...) after a failure.
    Nielsen,
    /// Marquardt (1963): λ / 10 after a success, x 10 after a failure.
    Marquardt,
}

/// Geodesic acceleration (Transtrum and Sethna 2012): the step is v + a/2,
/// with a the second-order correction from the model's second directional
/// derivative along the velocity v (a finite difference over `h` v, one
/// model evaluation without Jacobian); a step with 2|a|/|v| > `alpha` is
/// refused (λ grows) without rendering it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Geodesic {
    /// Largest accepted ratio 2|a|/|v| of acceleration to velocity (norms in
    /// Marquardt-scaled parameters), e.g. 0.75.
    pub alpha: f64,
    /// Finite-difference step as a fraction of the velocity: the model is
    /// evaluated at x + h v (e.g. 0.1).
    pub h: f64,
}

/// Settings of the iteration.
#[derive(Debug, Clone)]
pub struct LmSettings {
    /// At most this many steps (each one evaluation of model and Jacobian).
    pub max_iterations: usize,
    /// Stop when the loss reduction the Gauss-Newton step predicts is at most
    /// `ftol` x loss (nothing left to gain, relatively).
    pub ftol: f64,
    /// Stop when every parameter's Gauss-Newton step (or a step that failed
    /// to lower the loss) is at most `xtol` x max(|x|, scale).
    pub xtol: f64,
    /// Stop when the Gauss-Newton step's predicted loss reduction, over the
    /// dispersion (least squares: loss / (n - k); Poisson: 1), is at most
    /// this: the squared distance to the optimum of the local quadratic
    /// model in standard errors (1e-4: within 0.01 standard errors).
    pub decrement_tol: f64,
    /// Initial damping λ (relative to the scaled diagonal, which is 1).
    pub lambda0: f64,
    /// The rule by which λ changes after each step (default
    /// [`Damping::Marquardt`]).
    pub damping: Damping,
    /// Geodesic acceleration; off when None (the default).
    pub geodesic: Option<Geodesic>,
}

impl Default for LmSettings {
    fn default() -> Self {
        LmSettings {
            max_iterations: 100,
            ftol: 1e-10,
            xtol: 1e-10,
            decrement_tol: 1e-4,
            lambda0: 1e-3,
            damping: Damping::Marquardt,
            geodesic: None,
        }
    }
}

/// One row of the trajectory: iteration 0 is the start; each later row is
/// one trial step (accepted or not).
#[derive(Debug, Clone, Serialize)]
pub struct TrajectoryRow {
    /// Step number (0 = the start).
    pub iteration: usize,
    /// Whether the step was taken: finite loss, lower than before, gain ratio
    /// (actual / predicted reduction) above 1e-4; true for row 0.
    pub accepted: bool,
    /// Loss at the trial point (at the start for iteration 0).
    pub loss: f64,
    /// Parameter values of the trial point.
    pub params: Vec<f64>,
    /// λ the step was computed with.
    pub damping: f64,
    /// ‖δ / scale‖₂ of the (clamped) step.
    pub step_norm: f64,
}

/// What the iteration ended with.
#[derive(Debug, Clone)]
pub struct LmOutcome {
    /// The final parameter values (the last accepted point).
    pub x: Vec<f64>,
    /// Model and Jacobian at `x`.
    pub eval: Eval,
    /// The loss at `x` (see [`loss`]).
    pub loss: f64,
    /// The loss at the start (clamped into the bounds).
    pub loss_start: f64,
    /// Steps computed (one damped solve each), rejected and refused ones
    /// included.
    pub iterations: usize,
    /// Evaluations with the Jacobian.
    pub evaluations: usize,
    /// Evaluations of the values alone (geodesic acceleration).
    pub value_evaluations: usize,
    /// Whether a convergence test stopped the iteration (false: the iteration
    /// cap, or λ grew past 1e16).
    pub converged: bool,
    /// Why the iteration stopped, in words.
    pub reason: String,
    /// Every step tried, row 0 the start.
    pub trajectory: Vec<TrajectoryRow>,
}

/// Floor of the Poisson model (relative to its largest value in the region):
/// keeps the weights 1/m and the log finite where the model is ~0.
pub const POISSON_FLOOR_REL: f64 = 1e-12;

fn floor_of(objective: Objective, m: &[f64]) -> f64 {
    match objective {
        Objective::LeastSquares => 0.0,
        Objective::PoissonNll => {
            let mx = m.iter().fold(0.0f64, |a, &b| a.max(b));
            (mx * POISSON_FLOOR_REL).max(f64::MIN_POSITIVE)
        }
    }
}

/// The loss: sum of squared residuals, or the Poisson deviance
/// 2 Σ [m - y + y ln(y/m)] (≥ 0; the negative log-likelihood less its
/// saturated value, times 2).
pub fn loss(objective: Objective, y: &[f64], m: &[f64]) -> f64 {
    match objective {
        Objective::LeastSquares => y.iter().zip(m).map(|(y, m)| (y - m) * (y - m)).sum(),
        Objective::PoissonNll => {
            let fl = floor_of(objective, m);
            y.iter()
                .zip(m)
                .map(|(&y, &m)| {
                    let m = m.max(fl);
                    if y > 0.0 {
                        2.0 * (m - y + y * (y / m).ln())
                    } else {
                        2.0 * m
                    }
                })
                .sum()
        }
    }
}

/// Weights at the model `m`: 1 (least squares) or 1 / m (Poisson, IRLS).
pub fn weights(objective: Objective, m: &[f64]) -> Vec<f64> {
    match objective {
        Objective::LeastSquares => vec![1.0; m.len()],
        Objective::PoissonNll => {
            let fl = floor_of(objective, m);
            m.iter().map(|&m| 1.0 / m.max(fl)).collect()
        }
    }
}

/// `A = Jᵀ W J` and `g = Jᵀ W (y - m)`.
pub fn normal_equations(objective: Objective, y: &[f64], e: &Eval) -> (DMatrix<f64>, DVector<f64>) {
    use rayon::prelude::*;
    let k = e.jac.len();
    let w = weights(objective, &e.model);
    // Fixed chunks of pixels on rayon's threads, their sums added in chunk
    // order: the same bytes on any number of threads (a 1024^2 image with
    // 10 parameters is ~7e7 multiply-adds per iteration).
    const CHUNK: usize = 8192;
    let n = y.len();
    let partial: Vec<(Vec<f64>, Vec<f64>)> = (0..n.div_ceil(CHUNK))
        .into_par_iter()
        .map(|c| {
            let (lo, hi) = (c * CHUNK, ((c + 1) * CHUNK).min(n));
            let mut a = vec![0.0; k * k];
            let mut g = vec![0.0; k];
            let mut wj = vec![0.0; k];
            for i in lo..hi {
                let r = y[i] - e.model[i];
                for ((wjj, gj), col) in wj.iter_mut().zip(g.iter_mut()).zip(&e.jac) {
                    *wjj = w[i] * col[i];
                    *gj += *wjj * r;
                }
                for (j, &wjj) in wj.iter().enumerate() {
                    if wjj == 0.0 {
                        continue;
                    }
                    let row = &mut a[j * k..j * k + j + 1];
                    for (ajl, col) in row.iter_mut().zip(&e.jac) {
                        *ajl += wjj * col[i];
                    }
                }
            }
            (a, g)
        })
        .collect();
    let mut a = DMatrix::<f64>::zeros(k, k);
    let mut g = DVector::<f64>::zeros(k);
    for (pa, pg) in &partial {
        for j in 0..k {
            g[j] += pg[j];
            for l in 0..=j {
                a[(j, l)] += pa[j * k + l];
            }
        }
    }
    for j in 0..k {
        for l in 0..j {
            a[(l, j)] = a[(j, l)];
        }
    }
    (a, g)
}

/// `diag(A)^-1/2`; an error naming the parameter whose column is zero.
fn scaling(a: &DMatrix<f64>, names: &[String]) -> Result<DVector<f64>, RefineError> {
    let s = (0..a.nrows())
        .map(|j| {
            let d = a[(j, j)];
            if d > 0.0 && d.is_finite() {
                Ok(1.0 / d.sqrt())
            } else {
                Err(RefineError::Numeric(format!(
                    "the image in the fitted region does not depend on '{}' (zero Jacobian \
                     column, Jᵀ W J diagonal {d})",
                    names[j]
                )))
            }
        })
        .collect::<Result<Vec<f64>, RefineError>>()?;
    Ok(DVector::from_vec(s))
}

/// Solve `(Ã + λ I) δ̃ = g̃` and return `δ = S δ̃` (None when not positive definite).
fn damped_step(
    a: &DMatrix<f64>,
    g: &DVector<f64>,
    s: &DVector<f64>,
    lambda: f64,
) -> Option<DVector<f64>> {
    let k = a.nrows();
    let at = a.component_mul(&(s * s.transpose())) + DMatrix::<f64>::identity(k, k) * lambda;
    let gt = g.component_mul(s);
    let chol = at.cholesky()?;
    let d = chol.solve(&gt);
    let d = d.component_mul(s);
    d.iter().all(|v| v.is_finite()).then_some(d)
}

/// The inverse of `A` through its scaled form (`S (S A S)^-1 S`); None when
/// singular.
pub fn inverse(a: &DMatrix<f64>) -> Option<DMatrix<f64>> {
    let d = a.diagonal();
    if d.iter().any(|v| !(*v > 0.0 && v.is_finite())) {
        return None;
    }
    let s = d.map(|v| 1.0 / v.sqrt());
    let ss = &s * s.transpose();
    let out = a
        .component_mul(&ss)
        .cholesky()?
        .inverse()
        .component_mul(&ss);
    out.iter().all(|v| v.is_finite()).then_some(out)
}

/// The problem: observations, objective, bounds and per-parameter scales.
pub struct Problem<'a> {
    /// The observations y_i over the fitted pixels.
    pub y: &'a [f64],
    /// What is minimised (least squares or the Poisson deviance).
    pub objective: Objective,
    /// Parameter names, for error messages.
    pub names: Vec<String>,
    /// Lower bound of each parameter (-∞ for none).
    pub lower: Vec<f64>,
    /// Upper bound of each parameter (+∞ for none).
    pub upper: Vec<f64>,
    /// Typical size of each parameter: relative changes are
    /// |δ| / max(|x|, scale), the step norm is ‖δ / scale‖₂.
    pub scale: Vec<f64>,
}

impl Problem<'_> {
    fn rel_change(&self, x: &[f64], d: &[f64]) -> f64 {
        x.iter()
            .zip(d)
            .zip(&self.scale)
            .map(|((x, d), s)| d.abs() / x.abs().max(*s))
            .fold(0.0, f64::max)
    }
    fn clamp(&self, x: &[f64]) -> Vec<f64> {
        x.iter()
            .enumerate()
            .map(|(i, v)| v.max(self.lower[i]).min(self.upper[i]))
            .collect()
    }
}

/// Minimise from `x0` (clamped into the bounds).
pub fn levenberg_marquardt(
    prob: &Problem,
    x0: &[f64],
    settings: &LmSettings,
    model: &mut dyn Evaluator,
) -> Result<LmOutcome, RefineError> {
    let k = x0.len();
    let n = prob.y.len();
    let mut x = prob.clamp(x0);
    let mut e = model.eval(&x)?;
    let mut evaluations = 1;
    let mut value_evaluations = 0;
    check_eval(&e, n, k)?;
    let mut l = loss(prob.objective, prob.y, &e.model);
    let loss_start = l;
    let mut lambda = settings.lambda0;
    let mut nu = 2.0;
    let mut traj = vec![TrajectoryRow {
        iteration: 0,
        accepted: true,
        loss: l,
        params: x.clone(),
        damping: lambda,
        step_norm: 0.0,
    }];
    // the value-only model at x (geodesic finite differences), when needed
    let mut m_plain: Option<Vec<f64>> = None;
    let mut iterations = 0;
    let step_norm_of = |d: &[f64]| -> f64 {
        d.iter()
            .zip(&prob.scale)
            .map(|(d, s)| (d / s) * (d / s))
            .sum::<f64>()
            .sqrt()
    };
    let fail = |lambda: &mut f64, nu: &mut f64| match settings.damping {
        Damping::Nielsen => {
            *lambda *= *nu;
            *nu *= 2.0;
        }
        Damping::Marquardt => *lambda *= 10.0,
    };
    let (converged, reason) = loop {
        if !l.is_finite() {
            return Err(RefineError::Numeric(format!("loss is {l} at {x:?}")));
        }
        if l == 0.0 {
            break (true, "loss is exactly 0".to_string());
        }
        let (a, g) = normal_equations(prob.objective, prob.y, &e);
        let s = scaling(&a, &prob.names)?;
        // Tests on the full Gauss-Newton step (no evaluation needed).
        if let Some(gn) = damped_step(&a, &g, &s, 0.0) {
            let t: Vec<f64> = x.iter().zip(gn.iter()).map(|(a, b)| a + b).collect();
            let gn_c: Vec<f64> = prob.clamp(&t).iter().zip(&x).map(|(c, x)| c - x).collect();
            let pred_gn = g.dot(&gn);
            if prob.rel_change(&x, &gn_c) <= settings.xtol {
                break (
                    true,
                    format!(
                        "Gauss-Newton step at most xtol = {:e} of every parameter",
                        settings.xtol
                    ),
                );
            }
            let dispersion = match prob.objective {
                Objective::LeastSquares => l / (n.saturating_sub(k).max(1)) as f64,
                Objective::PoissonNll => 1.0,
            };
            if pred_gn <= settings.decrement_tol * dispersion {
                break (
                    true,
                    format!(
                        "Gauss-Newton step within {:.1e} standard errors of the optimum of the \
                         local quadratic model",
                        (pred_gn / dispersion).max(0.0).sqrt()
                    ),
                );
            }
            if pred_gn <= settings.ftol * l {
                break (
                    true,
                    format!(
                        "predicted loss reduction {pred_gn:e} at most ftol = {:e} of the loss",
                        settings.ftol
                    ),
                );
            }
        }
        if iterations >= settings.max_iterations {
            break (
                false,
                format!("iteration cap ({}) reached", settings.max_iterations),
            );
        }
        if lambda > 1e16 {
            break (
                false,
                format!("damping grew to {lambda:e} without lowering the loss"),
            );
        }
        let Some(v) = damped_step(&a, &g, &s, lambda) else {
            fail(&mut lambda, &mut nu);
            lambda = lambda.max(1e-12);
            continue;
        };
        iterations += 1;
        let mut delta = v.clone();
        if let Some(geo) = settings.geodesic {
            // second directional derivative of the model along v
            if m_plain.is_none() {
                m_plain = Some(model.value(&x)?);
                value_evaluations += 1;
            }
            let m0 = m_plain.as_ref().unwrap();
            let xh: Vec<f64> = x.iter().zip(v.iter()).map(|(x, v)| x + geo.h * v).collect();
            let mh = model.value(&xh)?;
            value_evaluations += 1;
            let mut jv = vec![0.0; n];
            for (col, vj) in e.jac.iter().zip(v.iter()) {
                for (jvi, c) in jv.iter_mut().zip(col) {
                    *jvi += c * vj;
                }
            }
            let w = weights(prob.objective, &e.model);
            // w_i times the second directional derivative of model value i
            let wfvv: Vec<f64> = mh
                .iter()
                .zip(m0)
                .zip(&jv)
                .zip(&w)
                .map(|(((mh, m0), jv), w)| w * 2.0 / geo.h * ((mh - m0) / geo.h - jv))
                .collect();
            let rhs = DVector::from_iterator(
                k,
                e.jac
                    .iter()
                    .map(|col| -col.iter().zip(&wfvv).map(|(c, f)| c * f).sum::<f64>()),
            );
            let acc = damped_step(&a, &rhs, &s, lambda).unwrap_or_else(|| DVector::zeros(k));
            let ratio = 2.0 * acc.component_div(&s).norm() / v.component_div(&s).norm();
            if ratio.is_nan() || ratio > geo.alpha {
                traj.push(TrajectoryRow {
                    iteration: iterations,
                    accepted: false,
                    loss: f64::NAN,
                    params: x.iter().zip(v.iter()).map(|(x, v)| x + v).collect(),
                    damping: lambda,
                    step_norm: step_norm_of(v.as_slice()),
                });
                fail(&mut lambda, &mut nu);
                continue;
            }
            delta += acc * 0.5;
        }
        let trial: Vec<f64> = prob.clamp(
            &x.iter()
                .zip(delta.iter())
                .map(|(a, b)| a + b)
                .collect::<Vec<_>>(),
        );
        let d = DVector::from_iterator(k, trial.iter().zip(&x).map(|(t, x)| t - x));
        let step_norm = step_norm_of(d.as_slice());
        let pred = 2.0 * g.dot(&d) - (d.transpose() * &a * &d)[(0, 0)];
        let rel = prob.rel_change(&x, d.as_slice());
        let et = model.eval(&trial)?;
        evaluations += 1;
        check_shape(&et, n, k)?;
        // A trial point outside the model's domain (a non-finite value, e.g.
        // a negative cell edge after a long step) is a failed step: λ grows.
        let lt = if et.model.iter().all(|v| v.is_finite()) {
            loss(prob.objective, prob.y, &et.model)
        } else {
            f64::NAN
        };
        let rho = if pred > 0.0 && lt.is_finite() {
            (l - lt) / pred
        } else {
            -1.0
        };
        let accepted = rho > 1e-4 && lt < l;
        traj.push(TrajectoryRow {
            iteration: iterations,
            accepted,
            loss: lt,
            params: trial.clone(),
            damping: lambda,
            step_norm,
        });
        if accepted {
            x = trial;
            e = et;
            l = lt;
            m_plain = None;
            match settings.damping {
                Damping::Nielsen => {
                    lambda *= (1.0f64 / 3.0).max(1.0 - (2.0 * rho - 1.0).powi(3));
                    nu = 2.0;
                }
                Damping::Marquardt => lambda = (lambda / 10.0).max(1e-15),
            }
        } else {
            if rel <= settings.xtol {
                break (
                    true,
                    format!(
                        "no lower loss along a step of at most xtol = {:e} of every parameter \
                         (the loss floor)",
                        settings.xtol
                    ),
                );
            }
            fail(&mut lambda, &mut nu);
        }
    };
    Ok(LmOutcome {
        x,
        eval: e,
        loss: l,
        loss_start,
        iterations,
        evaluations,
        value_evaluations,
        converged,
        reason,
        trajectory: traj,
    })
}

fn check_shape(e: &Eval, n: usize, k: usize) -> Result<(), RefineError> {
    if e.model.len() != n || e.jac.len() != k || e.jac.iter().any(|c| c.len() != n) {
        return Err(RefineError::Numeric(format!(
            "model gave {} values and {} Jacobian columns; expected {n} and {k}",
            e.model.len(),
            e.jac.len()
        )));
    }
    Ok(())
}

/// The start's evaluation: the right shape and finite values.
fn check_eval(e: &Eval, n: usize, k: usize) -> Result<(), RefineError> {
    check_shape(e, n, k)?;
    if let Some(i) = e.model.iter().position(|v| !v.is_finite()) {
        return Err(RefineError::Numeric(format!(
            "model value {i} is {}",
            e.model[i]
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// y = a exp(-b t) + c on 40 points.
    fn expo(x: &[f64], t: &[f64]) -> Eval {
        let (a, b, c) = (x[0], x[1], x[2]);
        let model = t.iter().map(|t| a * (-b * t).exp() + c).collect();
        let jac = vec![
            t.iter().map(|t| (-b * t).exp()).collect(),
            t.iter().map(|t| -a * t * (-b * t).exp()).collect(),
            vec![1.0; t.len()],
        ];
        Eval { model, jac }
    }

    struct Closure<F>(F);
    impl<F: FnMut(&[f64]) -> Result<Eval, RefineError>> Evaluator for Closure<F> {
        fn eval(&mut self, x: &[f64]) -> Result<Eval, RefineError> {
            (self.0)(x)
        }
    }

    fn problem(y: &[f64], objective: Objective) -> Problem<'_> {
        Problem {
            y,
            objective,
            names: vec!["a".into(), "b".into(), "c".into()],
            lower: vec![f64::NEG_INFINITY; 3],
            upper: vec![f64::INFINITY; 3],
            scale: vec![1.0; 3],
        }
    }

    #[test]
    fn recovers_exact_parameters_least_squares_and_poisson() {
        let t: Vec<f64> = (0..40).map(|i| i as f64 * 0.1).collect();
        let truth = [50.0, 0.7, 3.0];
        let y = expo(&truth, &t).model;
        for obj in [Objective::LeastSquares, Objective::PoissonNll] {
            let prob = problem(&y, obj);
            for settings in settings_variants() {
                let mut f = Closure(|x: &[f64]| Ok(expo(x, &t)));
                let out = levenberg_marquardt(&prob, &[30.0, 1.5, 1.0], &settings, &mut f).unwrap();
                assert!(out.converged, "{obj:?}: {}", out.reason);
                for (x, t) in out.x.iter().zip(truth) {
                    assert!(((x - t) / t).abs() < 1e-9, "{obj:?}: {:?}", out.x);
                }
                assert!(out.iterations < 30 && out.loss < 1e-12 * out.loss_start);
                assert_eq!(out.trajectory.len(), out.iterations + 1);
            }
        }
    }

    fn settings_variants() -> Vec<LmSettings> {
        // exact data: no statistical stop (within 0.01 standard errors),
        // so the fit must reach the exact parameters
        let exact = LmSettings {
            decrement_tol: 0.0,
            ..Default::default()
        };
        let nielsen = LmSettings {
            damping: Damping::Nielsen,
            ..exact.clone()
        };
        let geodesic = LmSettings {
            geodesic: Some(Geodesic {
                alpha: 0.75,
                h: 0.1,
            }),
            ..exact.clone()
        };
        vec![exact, nielsen, geodesic]
    }

    #[test]
    fn bounds_hold_and_zero_columns_are_named() {
        let t: Vec<f64> = (0..40).map(|i| i as f64 * 0.1).collect();
        let y = expo(&[50.0, 0.7, 3.0], &t).model;
        let mut prob = problem(&y, Objective::LeastSquares);
        prob.upper[1] = 0.5;
        let mut f = Closure(|x: &[f64]| Ok(expo(x, &t)));
        let out =
            levenberg_marquardt(&prob, &[30.0, 0.3, 1.0], &LmSettings::default(), &mut f).unwrap();
        assert!(out.trajectory.iter().all(|r| r.params[1] <= 0.5));
        assert_eq!(out.x[1], 0.5);
        let mut flat = Closure(|x: &[f64]| {
            let mut e = expo(x, &t);
            e.jac[2] = vec![0.0; t.len()];
            Ok(e)
        });
        let err = levenberg_marquardt(&prob, &[30.0, 0.3, 1.0], &LmSettings::default(), &mut flat)
            .unwrap_err();
        assert!(err.to_string().contains("'c'"), "{err}");
    }

    /// A trial point where the model is not finite (outside its domain) is
    /// a rejected step, not an error: the fit goes on with more damping.
    #[test]
    fn non_finite_trial_is_a_rejected_step() {
        let t: Vec<f64> = (0..40).map(|i| i as f64 * 0.1).collect();
        let truth = [50.0, 0.7, 3.0];
        let y = expo(&truth, &t).model;
        for obj in [Objective::LeastSquares, Objective::PoissonNll] {
            let prob = problem(&y, obj);
            let mut calls = 0;
            let mut f = Closure(|x: &[f64]| {
                calls += 1;
                let mut e = expo(x, &t);
                if calls == 2 {
                    e.model[0] = f64::NAN;
                }
                Ok(e)
            });
            let settings = LmSettings {
                decrement_tol: 0.0,
                ..Default::default()
            };
            let out = levenberg_marquardt(&prob, &[30.0, 1.5, 1.0], &settings, &mut f).unwrap();
            assert!(out.converged, "{obj:?}: {}", out.reason);
            assert!(!out.trajectory[1].accepted && out.trajectory[1].loss.is_nan());
            assert!(out.trajectory[2].damping > out.trajectory[1].damping);
            for (x, t) in out.x.iter().zip(truth) {
                assert!(((x - t) / t).abs() < 1e-9, "{obj:?}: {:?}", out.x);
            }
        }
        // a non-finite model at the start is still an error
        let prob = problem(&y, Objective::LeastSquares);
        let mut nan = Closure(|x: &[f64]| {
            let mut e = expo(x, &t);
            e.model[3] = f64::NAN;
            Ok(e)
        });
        let err = levenberg_marquardt(&prob, &[30.0, 1.5, 1.0], &LmSettings::default(), &mut nan)
            .unwrap_err();
        assert!(err.to_string().contains("model value 3"), "{err}");
    }

    #[test]
    fn inverse_matches_and_refuses_singular() {
        let a = DMatrix::from_row_slice(2, 2, &[4.0, 1.0, 1.0, 3.0]);
        let i = inverse(&a).unwrap();
        let id = &a * &i;
        assert!((id[(0, 0)] - 1.0).abs() < 1e-14 && id[(0, 1)].abs() < 1e-14);
        let s = DMatrix::from_row_slice(2, 2, &[1.0, 1.0, 1.0, 1.0]);
        assert!(inverse(&s).is_none());
    }
}
