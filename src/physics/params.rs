//! The continuous parameters the model can be differentiated by, named in one
//! place. Values are in the units of the command line (Å, deg, mm), so a
//! derivative is d(pixel)/d(parameter in those units).

use super::scalar::Real;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use std::fmt;

macro_rules! params {
    ($( $var:ident => $name:literal, $unit:literal, $doc:literal; )*) => {
        /// A differentiable model parameter.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, JsonSchema)]
        pub enum Param {
            $( #[doc = $doc] #[serde(rename = $name)] $var, )*
        }

        impl Param {
            /// Every parameter, in a fixed order.
            pub const ALL: &'static [Param] = &[ $( Param::$var, )* ];

            /// The name used in TOML, on the command line and in results.
            pub fn name(self) -> &'static str {
                match self { $( Param::$var => $name, )* }
            }

            /// Unit of the parameter's value.
            pub fn unit(self) -> &'static str {
                match self { $( Param::$var => $unit, )* }
            }

            /// What the parameter is, in words.
            pub fn description(self) -> &'static str {
                match self { $( Param::$var => $doc, )* }
            }
        }
    };
}

params! {
    CellA => "cell_a", "Å", "unit cell edge a";
    CellB => "cell_b", "Å", "unit cell edge b";
    CellC => "cell_c", "Å", "unit cell edge c";
    CellAlpha => "cell_alpha", "deg", "unit cell angle alpha";
    CellBeta => "cell_beta", "deg", "unit cell angle beta";
    CellGamma => "cell_gamma", "deg", "unit cell angle gamma";
    MissetX => "misset_x", "deg", "misset rotation about lab X";
    MissetY => "misset_y", "deg", "misset rotation about lab Y";
    MissetZ => "misset_z", "deg", "misset rotation about lab Z";
    PhiStart => "phi_start", "deg", "spindle start angle phi0";
    OscRange => "osc_range", "deg", "oscillation range (phistep = osc/phisteps)";
    MosaicSpread => "mosaic_spread", "deg", "mosaic spread";
    NA => "n_a", "cells", "unit cells along a (real-valued in sincg)";
    NB => "n_b", "cells", "unit cells along b";
    NC => "n_c", "cells", "unit cells along c";
    Distance => "distance", "mm", "detector distance (close distance for the sample pivot)";
    BeamCenterF => "beam_center_f", "mm", "fast coordinate of the pivot point (Fbeam, or Fclose for the sample pivot)";
    BeamCenterS => "beam_center_s", "mm", "slow coordinate of the pivot point (Sbeam, or Sclose for the sample pivot)";
    DetectorRotX => "detector_rotx", "deg", "detector rotation about lab X";
    DetectorRotY => "detector_roty", "deg", "detector rotation about lab Y";
    DetectorRotZ => "detector_rotz", "deg", "detector rotation about lab Z";
    Twotheta => "twotheta", "deg", "detector two-theta swing";
    Wavelength => "wavelength", "Å", "central wavelength";
    Fluence => "fluence", "photons/m^2", "incident fluence";
    Polarization => "polarization", "1", "Kahn polarization factor";
    DefaultF => "default_f", "1", "structure factor of reflections not in the HKL file";
}

impl fmt::Display for Param {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl std::str::FromStr for Param {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        Param::ALL
            .iter()
            .copied()
            .find(|p| p.name() == s)
            .ok_or_else(|| {
                format!(
                    "unknown parameter '{s}'; valid names: {}",
                    Param::valid_names()
                )
            })
    }
}

impl Param {
    /// The six unit-cell parameters (a, b, c, alpha, beta, gamma).
    pub const CELL: [Param; 6] = [
        Param::CellA,
        Param::CellB,
        Param::CellC,
        Param::CellAlpha,
        Param::CellBeta,
        Param::CellGamma,
    ];

    /// Every parameter name, comma separated (for messages).
    pub fn valid_names() -> String {
        Param::ALL
            .iter()
            .map(|p| p.name())
            .collect::<Vec<_>>()
            .join(", ")
    }
}

/// Values of every continuous parameter, in scalar type T (units as [`Param::unit`]).
#[derive(Clone, Copy, Debug)]
pub struct ParamValues<T> {
    /// Each parameter's value, indexed by [`Param`] (units as [`Param::unit`]).
    pub v: [T; 26],
    /// Parameters seeded with a derivative direction (lets the model keep
    /// faster forms that are exact only for constants, e.g. whole-number N).
    pub live: [bool; 26],
    /// The same values in float64 (a float32 render keeps them to evaluate
    /// the lattice factors at float64-accurate indices: simulator Model).
    pub exact: [f64; 26],
}

impl<T: Real> ParamValues<T> {
    /// The value of `p`.
    #[inline(always)]
    pub fn get(&self, p: Param) -> T {
        self.v[p as usize]
    }
    /// Set the value of `p` (and its float64 copy in `exact`).
    pub fn set(&mut self, p: Param, x: T) {
        self.v[p as usize] = x;
        self.exact[p as usize] = x.val();
    }
    /// Constant values (no derivative directions).
    pub fn from_f64(base: &ParamValues<f64>) -> Self {
        let mut v = [T::cst(0.0); 26];
        for (o, b) in v.iter_mut().zip(base.v.iter()) {
            *o = T::cst(*b);
        }
        ParamValues {
            v,
            live: [false; 26],
            exact: base.exact,
        }
    }
    /// The same values in float64 without derivatives, with the same live
    /// flags (so a model built from them has the same domains, N factors and
    /// orientations).
    pub fn exact_f64(&self) -> ParamValues<f64> {
        ParamValues {
            v: self.exact,
            live: self.live,
            exact: self.exact,
        }
    }
    /// Set a parameter to a value that carries a derivative direction.
    pub fn seed(&mut self, p: Param, x: T) {
        self.v[p as usize] = x;
        self.live[p as usize] = true;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_unknown_lists_valid() {
        assert_eq!(Param::ALL.len(), 26);
        for p in Param::ALL {
            assert_eq!(p.name().parse::<Param>().unwrap(), *p);
            assert_eq!(Param::ALL[*p as usize], *p);
        }
        let e = "cell_q".parse::<Param>().unwrap_err();
        assert!(e.contains("cell_q") && e.contains("cell_a") && e.contains("default_f"));
    }
}
