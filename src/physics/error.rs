//! Configuration errors of the model, and the small value checks every
//! resolver uses (each names the configuration key it refuses).

use super::scalar::{unitize, Vec3};
use crate::io::IoError;

/// A configuration problem, naming the key and the value.
#[derive(Debug, thiserror::Error)]
pub enum SetupError {
    /// A value refused: the configuration key and why.
    #[error("{key}: {msg}")]
    Invalid {
        /// The configuration key, e.g. `detector.distance_mm`.
        key: String,
        /// What is wrong with its value.
        msg: String,
    },
    /// An input file that could not be read or parsed.
    #[error(transparent)]
    Io(#[from] IoError),
}

/// A [`SetupError::Invalid`] for `key`.
pub(crate) fn invalid(key: &str, msg: impl Into<String>) -> SetupError {
    SetupError::Invalid {
        key: key.to_string(),
        msg: msg.into(),
    }
}

/// `x`, when finite.
pub(crate) fn finite(key: &str, x: f64) -> Result<f64, SetupError> {
    if x.is_finite() {
        Ok(x)
    } else {
        Err(invalid(key, format!("must be a finite number (got {x})")))
    }
}

/// `x`, when finite and > 0.
pub(crate) fn positive(key: &str, x: f64) -> Result<f64, SetupError> {
    finite(key, x)?;
    if x > 0.0 {
        Ok(x)
    } else {
        Err(invalid(key, format!("must be > 0 (got {x})")))
    }
}

/// `v` scaled to length 1; finite and not the zero vector.
pub(crate) fn unit_vec(key: &str, v: [f64; 3]) -> Result<[f64; 3], SetupError> {
    for x in v {
        finite(key, x)?;
    }
    let (u, m) = unitize(&Vec3::<f64>::cst(v));
    if m == 0.0 {
        return Err(invalid(key, "must not be the zero vector"));
    }
    Ok(u.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn checks_name_the_key_and_value() {
        assert_eq!(finite("k", 2.5).unwrap(), 2.5);
        let e = finite("beam.flux", f64::NAN).unwrap_err().to_string();
        assert_eq!(e, "beam.flux: must be a finite number (got NaN)");
        let e = positive("detector.distance_mm", -5.0)
            .unwrap_err()
            .to_string();
        assert_eq!(e, "detector.distance_mm: must be > 0 (got -5)");
        assert_eq!(unit_vec("v", [0.0, 3.0, 4.0]).unwrap(), [0.0, 0.6, 0.8]);
        let e = unit_vec("beam.beam_vector", [0.0; 3])
            .unwrap_err()
            .to_string();
        assert!(
            e.starts_with("beam.beam_vector: must not be the zero"),
            "{e}"
        );
    }
}
