//! The crystal model: unit cell (or MOSFLM orientation matrix), misset,
//! number of cells N (or the crystal size), lattice shape, mosaic domains,
//! and the structure factors (spec-a-core "Crystal", "Mosaicity", "Lattice
//! factor", "Structure factor F_cell", "Auto-selection rules").

use crate::io::hkl::Reflection;
use crate::io::IoError;
use crate::physics::budget::RenderBudget;
use crate::physics::config::{CrystalConfig, LatticeShape};
use crate::physics::error::{finite, invalid, SetupError};
use crate::physics::inputs::{contents, required, InputFile};
use crate::physics::rng::{mosaic_rotation_umat, umat2misset, Ran1, UmatDeviates};
use crate::physics::scalar::RTD;
use crate::physics::structure_factors::HklGrid;

/// Where the unit cell comes from.
#[derive(Clone, Debug, PartialEq)]
pub enum CellSource {
    /// From the cell parameters a, b, c (Å), α, β, γ (deg) (`crystal.cell`).
    Cell,
    /// MOSFLM A matrix: [a*, b*, c*] in Å^-1 · λ(Å).
    Matrix([[f64; 3]; 3]),
}

/// The mosaic domains: spread (radians) and each domain's random deviates.
#[derive(Clone, Debug, PartialEq)]
pub struct Mosaic {
    /// Mosaic spread (rad), C's mosaic_spread.
    pub spread: f64,
    /// The random deviates of each mosaic domain (C's mosaic_domains, from mosaic_seed).
    pub deviates: Vec<UmatDeviates>,
    /// With a spread of 0: the domains a spread just above 0 would use (the
    /// domain edge of mosaic_spread); else empty.
    pub deviates_edge: Vec<UmatDeviates>,
}

/// A resolved crystal. N here is the user's, before the crystal size sets it
/// (that needs the cell vectors: [`n_from_size`]).
#[derive(Clone, Debug, PartialEq)]
pub struct Crystal {
    /// Where the cell comes from: cell parameters or a MOSFLM A matrix.
    pub cell_source: CellSource,
    /// The cell as given (Å, deg), with [`CellSource::Cell`].
    pub cell: Option<[f64; 6]>,
    /// Misset rotations about lab X, Y, Z (radians) ...
    pub misset: [f64; 3],
    /// ... and in degrees as the parameter table shows them.
    pub misset_deg: [f64; 3],
    /// Unit cells along a, b, c as the user gave them (C's Na, Nb, Nc).
    pub n_cells: [f64; 3],
    /// Lattice transform of the crystal shape (C's xtal_shape).
    pub shape: LatticeShape,
    /// Scale of the spot-shape radius (C's fudge).
    pub fudge: f64,
    /// Structure factor of reflections not in the HKL file (C's default_F).
    pub default_f: f64,
    /// The mosaic domains: spread and deviates.
    pub mosaic: Mosaic,
}

/// Resolve `cr`: the mosaic domains (checked against `budget` with the
/// sources and phi steps they multiply), the cell or matrix, the misset
/// (random from `seed` when asked), N, fudge and default_F.
pub fn resolve(
    cr: &CrystalConfig,
    seed: Option<i64>,
    matrix: Option<InputFile<[[f64; 3]; 3]>>,
    budget: &RenderBudget,
    sources: usize,
    phisteps: usize,
    notes: &mut Vec<String>,
) -> Result<Crystal, SetupError> {
    let (spread, domains) = mosaic_domains(cr, notes)?;
    budget.check(
        "crystal.mosaic_domains",
        sources as u64,
        phisteps as u64,
        domains as u64,
        0,
    )?;
    let mosaic = draw_domains(cr, spread, domains);
    let cell_source = cell_source(cr, matrix)?;
    let misset = misset(cr, seed, notes)?;
    for (i, n) in cr.n_cells.iter().enumerate() {
        if !(n.is_finite() && *n > 0.0) {
            return Err(invalid(
                &format!("crystal.n_cells[{i}]"),
                format!("must be > 0 (got {n})"),
            ));
        }
    }
    let misset_deg = match cr.misset_deg {
        Some(m) if !cr.misset_random => m,
        _ => misset.map(|x| x * RTD),
    };
    Ok(Crystal {
        cell: match cell_source {
            CellSource::Cell => cr.cell,
            CellSource::Matrix(_) => None,
        },
        cell_source,
        misset,
        misset_deg,
        n_cells: cr.n_cells,
        shape: cr.shape,
        fudge: finite("crystal.fudge", cr.fudge)?,
        default_f: finite("crystal.default_f", cr.default_f)?,
        mosaic,
    })
}

/// nanoBragg's mosaic rule: a spread without a domain count uses 10
/// domains, domains without a spread one. Returns (spread in radians, domains >= 1).
fn mosaic_domains(cr: &CrystalConfig, notes: &mut Vec<String>) -> Result<(f64, i64), SetupError> {
    let mut spread = match cr.mosaic_spread_deg {
        Some(s) => finite("crystal.mosaic_spread_deg", s)? / RTD,
        None => -1.0,
    };
    let mut domains = match cr.mosaic_domains {
        Some(n) if n > 100_000 => {
            return Err(invalid(
                "crystal.mosaic_domains",
                format!("{n} is too many"),
            ))
        }
        Some(n) => n,
        None => -1,
    };
    if domains <= 0 {
        if spread < 0.0 {
            domains = 1;
            spread = 0.0;
        } else if spread == 0.0 {
            domains = 1;
        } else {
            notes.push("finite mosaicity with only one domain: using 10 mosaic domains".into());
            domains = 10;
        }
    } else if spread < 0.0 {
        notes.push("no mosaic spread given: using 1 mosaic domain".into());
        spread = 0.0;
        domains = 1;
    } else if spread == 0.0 {
        domains = 1;
    }
    Ok((spread, domains))
}

/// Each domain's random deviates, drawn from the mosaic seed (C uses -seed).
fn draw_domains(cr: &CrystalConfig, spread: f64, domains: i64) -> Mosaic {
    let draw = |n: i64| {
        let mut rng = Ran1::new(-cr.mosaic_seed);
        (0..n).map(|_| UmatDeviates::draw(&mut rng)).collect()
    };
    // At spread 0 C uses one domain; a spread just above 0 would use the
    // requested count (10 when none is given). Those domains' deviates let a
    // derivative at the edge be the one-sided one (simulator Model::build).
    let deviates_edge = if spread == 0.0 {
        draw(match cr.mosaic_domains {
            Some(n) if n > 0 => n,
            _ => 10,
        })
    } else {
        vec![]
    };
    Mosaic {
        spread,
        deviates: draw(domains),
        deviates_edge,
    }
}

/// The cell (checked: positive edges, angles that close) or the MOSFLM
/// matrix (checked: not singular), exactly one of them.
fn cell_source(
    cr: &CrystalConfig,
    matrix: Option<InputFile<[[f64; 3]; 3]>>,
) -> Result<CellSource, SetupError> {
    match (&cr.cell, &cr.mosflm_matrix) {
        (Some(_), Some(_)) => Err(invalid(
            "crystal",
            "give either crystal.cell or crystal.mosflm_matrix, not both",
        )),
        (None, None) => Err(invalid(
            "crystal.cell",
            "no unit cell: give crystal.cell (a b c alpha beta gamma) or crystal.mosflm_matrix",
        )),
        (Some(cell), None) => {
            check_cell(cell)?;
            contents("crystal.mosflm_matrix", None, matrix)?;
            Ok(CellSource::Cell)
        }
        (None, Some(m)) => {
            let (_, a) = required("crystal.mosflm_matrix", m, matrix)?;
            let det3 = a[0][0] * (a[1][1] * a[2][2] - a[1][2] * a[2][1])
                - a[0][1] * (a[1][0] * a[2][2] - a[1][2] * a[2][0])
                + a[0][2] * (a[1][0] * a[2][1] - a[1][1] * a[2][0]);
            if !(det3.is_finite() && det3 != 0.0) {
                return Err(invalid(
                    "crystal.mosflm_matrix",
                    format!(
                        "{}: the matrix is singular (determinant {det3}): its rows are not three independent reciprocal vectors",
                        m.display()
                    ),
                ));
            }
            Ok(CellSource::Matrix(a))
        }
    }
}

/// Edges > 0; angles in (0, 180) with each less than the sum of the other
/// two and the sum below 360 (else no parallelepiped has them).
fn check_cell(cell: &[f64; 6]) -> Result<(), SetupError> {
    for (i, name) in ["a", "b", "c"].iter().enumerate() {
        if !(cell[i].is_finite() && cell[i] > 0.0) {
            return Err(invalid(
                "crystal.cell",
                format!("edge {name} must be > 0 (got {})", cell[i]),
            ));
        }
    }
    for (i, name) in ["alpha", "beta", "gamma"].iter().enumerate() {
        let a = cell[3 + i];
        if !(a.is_finite() && a > 0.0 && a < 180.0) {
            return Err(invalid(
                "crystal.cell",
                format!("angle {name} must be in (0, 180) degrees (got {a})"),
            ));
        }
    }
    let (al, be, ga) = (cell[3], cell[4], cell[5]);
    if al + be + ga >= 360.0 || al >= be + ga || be >= al + ga || ga >= al + be {
        return Err(invalid(
            "crystal.cell",
            format!("angles {al} {be} {ga} make no cell (each must be less than the sum of the other two, and the sum less than 360)"),
        ));
    }
    Ok(())
}

/// The misset angles (radians): given, or random from the misset seed (or
/// the noise seed) as C's `-misset random` draws them.
fn misset(
    cr: &CrystalConfig,
    seed: Option<i64>,
    notes: &mut Vec<String>,
) -> Result<[f64; 3], SetupError> {
    if cr.misset_random {
        if cr.misset_deg.is_some() {
            return Err(invalid(
                "crystal.misset_deg",
                "give either misset_deg or misset_random, not both",
            ));
        }
        let seed = cr.misset_seed.or(seed).ok_or_else(|| {
            invalid(
                "crystal.misset_seed",
                "misset_random needs crystal.misset_seed (or seed) for a reproducible orientation",
            )
        })?;
        let mut r = Ran1::new(-seed);
        let u = mosaic_rotation_umat(90.0, &mut r);
        let m = umat2misset(&u);
        notes.push(format!(
            "random misset angles: {} {} {} deg",
            m[0] * RTD,
            m[1] * RTD,
            m[2] * RTD
        ));
        Ok(m)
    } else {
        let m = cr.misset_deg.unwrap_or([0.0; 3]);
        for (i, x) in m.iter().enumerate() {
            finite(&format!("crystal.misset_deg[{i}]"), *x)?;
        }
        Ok([m[0] / RTD, m[1] / RTD, m[2] / RTD])
    }
}

/// N from the crystal size (`crystal.size_mm`): ceil(size / edge) per axis,
/// the size first clipped to the beam (`beamsize`, m) across it; N below 1
/// is taken as 1. `edges_m` are the cell edge lengths in metres.
pub fn n_from_size(
    cr: &CrystalConfig,
    edges_m: [f64; 3],
    beamsize: f64,
    notes: &mut Vec<String>,
) -> Result<[f64; 3], SetupError> {
    let mut n = cr.n_cells;
    if let Some(size) = cr.size_mm {
        let mut sample = [0.0; 3];
        for i in 0..3 {
            sample[i] = finite(&format!("crystal.size_mm[{i}]"), size[i])? / 1000.0;
        }
        if beamsize >= 0.0 {
            for (i, axis) in [(1, "high"), (2, "wide")] {
                if beamsize < sample[i] {
                    notes.push(format!(
                        "clipping sample ({} m {axis}) with beam ({beamsize} m)",
                        sample[i]
                    ));
                    sample[i] = beamsize;
                }
            }
        }
        for i in 0..3 {
            if sample[i] > 0.0 {
                n[i] = (sample[i] / edges_m[i]).ceil();
            }
        }
    }
    for x in n.iter_mut() {
        if *x <= 1.0 {
            *x = 1.0;
        }
    }
    Ok(n)
}

/// The structure factors: the HKL file's grid, prefilled with default_F
/// (its extent checked against `budget` before it is allocated), or none;
/// without a file default_F must not be 0.
pub fn structure_factors(
    cr: &CrystalConfig,
    hkl: Option<InputFile<Vec<Reflection>>>,
    default_f: f64,
    budget: &RenderBudget,
    counts: [u64; 3],
) -> Result<Option<HklGrid>, SetupError> {
    let grid = match contents("crystal.hkl_file", cr.hkl_file.as_ref(), hkl)? {
        Some((path, reflections)) => {
            let points = HklGrid::points(&reflections);
            let [sources, phisteps, domains] = counts;
            budget.check("crystal.hkl_file", sources, phisteps, domains, points)?;
            if points > 2_000_000_000 {
                let e = IoError::file(
                    &path,
                    format!("index range too large ({points} grid points)"),
                );
                return Err(invalid("crystal.hkl_file", e.to_string()));
            }
            Some(HklGrid::from_reflections(&reflections, default_f))
        }
        None => None,
    };
    if grid.is_none() && default_f == 0.0 {
        return Err(invalid(
            "crystal.default_f",
            "is 0 and no crystal.hkl_file is given: every structure factor would be 0",
        ));
    }
    Ok(grid)
}

/// Tricubic interpolation of F: as configured, else on when any N <= 2;
/// only with a grid that holds reflections.
pub fn interpolate(cr: &CrystalConfig, hkl: Option<&HklGrid>, n: [f64; 3]) -> bool {
    let auto = n.iter().any(|x| *x <= 2.0);
    hkl.map(|h| h.count > 0).unwrap_or(false) && cr.interpolate.unwrap_or(auto)
}

#[cfg(test)]
mod tests {
    use super::*;

    static LIMIT: (u64, String) = (1 << 40, String::new());

    fn cubic() -> CrystalConfig {
        CrystalConfig {
            cell: Some([100.0, 100.0, 100.0, 90.0, 90.0, 90.0]),
            default_f: 100.0,
            ..Default::default()
        }
    }

    fn resolve_with(
        cr: &CrystalConfig,
        seed: Option<i64>,
        matrix: Option<InputFile<[[f64; 3]; 3]>>,
        notes: &mut Vec<String>,
    ) -> Result<Crystal, SetupError> {
        let budget = RenderBudget::new(8, 8, false, &LIMIT);
        resolve(cr, seed, matrix, &budget, 1, 1, notes)
    }

    /// spec-a-core "Auto-selection rules", mosaic domains.
    #[test]
    fn mosaic_rules() {
        let mut notes = vec![];
        let spread = CrystalConfig {
            mosaic_spread_deg: Some(0.5),
            ..cubic()
        };
        let c = resolve_with(&spread, None, None, &mut notes).unwrap();
        assert_eq!(c.mosaic.deviates.len(), 10);
        assert!(c.mosaic.deviates_edge.is_empty());
        assert!((c.mosaic.spread - 0.5 / RTD).abs() < 1e-18);
        assert_eq!(
            notes,
            ["finite mosaicity with only one domain: using 10 mosaic domains"]
        );
        let domains = CrystalConfig {
            mosaic_domains: Some(5),
            ..cubic()
        };
        let c = resolve_with(&domains, None, None, &mut notes).unwrap();
        assert_eq!((c.mosaic.deviates.len(), c.mosaic.spread), (1, 0.0));
        assert_eq!(notes[1], "no mosaic spread given: using 1 mosaic domain");
        // spread 0 with 5 domains: one domain, and the 5 a spread just above 0 would use
        let edge = CrystalConfig {
            mosaic_spread_deg: Some(0.0),
            ..domains
        };
        let c = resolve_with(&edge, None, None, &mut notes).unwrap();
        assert_eq!(
            (c.mosaic.deviates.len(), c.mosaic.deviates_edge.len()),
            (1, 5)
        );
        // the same seed draws the same deviates: the edge's first is the domain's
        assert_eq!(c.mosaic.deviates[0], c.mosaic.deviates_edge[0]);
        // too many domains for the budget of 10^7 sources and phi steps each
        let many = CrystalConfig {
            mosaic_spread_deg: Some(1.0),
            mosaic_domains: Some(100_000),
            ..cubic()
        };
        let budget = RenderBudget::new(8, 8, false, &LIMIT);
        let e = resolve(&many, None, None, &budget, 10_000, 100_000, &mut notes).unwrap_err();
        assert!(
            e.to_string().starts_with("crystal.mosaic_domains: needs"),
            "{e}"
        );
    }

    #[test]
    fn cell_or_matrix() {
        let mut notes = vec![];
        let bad = |cell| CrystalConfig {
            cell: Some(cell),
            ..cubic()
        };
        for (cell, what) in [
            ([0.0, 1.0, 1.0, 90.0, 90.0, 90.0], "edge a must be > 0"),
            (
                [1.0, 1.0, 1.0, 180.0, 90.0, 90.0],
                "angle alpha must be in (0, 180)",
            ),
            ([1.0, 1.0, 1.0, 10.0, 10.0, 170.0], "make no cell"),
            ([1.0, 1.0, 1.0, 120.0, 120.0, 120.0], "make no cell"),
        ] {
            let e = resolve_with(&bad(cell), None, None, &mut notes).unwrap_err();
            assert!(e.to_string().contains(what), "{cell:?}: {e}");
        }
        let matrix = CrystalConfig {
            cell: None,
            mosflm_matrix: Some("A.mat".into()),
            ..cubic()
        };
        let a = [[0.01, 0.0, 0.0], [0.0, 0.02, 0.0], [0.0, 0.0, 0.04]];
        let c = resolve_with(
            &matrix,
            None,
            Some(InputFile::data("/x/A.mat", a)),
            &mut notes,
        );
        let c = c.unwrap();
        assert_eq!((c.cell_source, c.cell), (CellSource::Matrix(a), None));
        let singular = [[0.01, 0.0, 0.0], [0.02, 0.0, 0.0], [0.0, 0.0, 0.04]];
        let e = resolve_with(
            &matrix,
            None,
            Some(InputFile::data("/x/A.mat", singular)),
            &mut notes,
        )
        .unwrap_err()
        .to_string();
        assert!(
            e.starts_with("crystal.mosflm_matrix: A.mat: the matrix is singular"),
            "{e}"
        );
        let both = CrystalConfig {
            cell: cubic().cell,
            ..matrix
        };
        let e = resolve_with(&both, None, None, &mut notes)
            .unwrap_err()
            .to_string();
        assert_eq!(
            e,
            "crystal: give either crystal.cell or crystal.mosflm_matrix, not both"
        );
    }

    #[test]
    fn misset_given_or_random() {
        let mut notes = vec![];
        let given = CrystalConfig {
            misset_deg: Some([10.0, -20.0, 30.0]),
            ..cubic()
        };
        let c = resolve_with(&given, None, None, &mut notes).unwrap();
        assert_eq!(c.misset_deg, [10.0, -20.0, 30.0]);
        assert_eq!(c.misset, [10.0 / RTD, -20.0 / RTD, 30.0 / RTD]);
        let random = CrystalConfig {
            misset_random: true,
            ..cubic()
        };
        let e = resolve_with(&random, None, None, &mut notes).unwrap_err();
        assert!(e.to_string().starts_with("crystal.misset_seed:"));
        let a = resolve_with(&random, Some(7), None, &mut notes).unwrap();
        let b = resolve_with(&random, Some(7), None, &mut notes).unwrap();
        let other = resolve_with(&random, Some(8), None, &mut notes).unwrap();
        assert_eq!(a.misset, b.misset);
        assert_ne!(a.misset, other.misset);
        assert_eq!(a.misset_deg, a.misset.map(|x| x * RTD));
        assert!(notes[0].starts_with("random misset angles: "));
    }

    /// spec-a-core "Crystal size": N = ceil(size / |edge|), the size clipped
    /// to the beam across it (y and z), N >= 1.
    #[test]
    fn n_from_the_crystal_size() {
        let mut notes = vec![];
        let cr = CrystalConfig {
            n_cells: [0.5, 3.0, 4.0],
            ..cubic()
        };
        assert_eq!(
            n_from_size(&cr, [1e-8; 3], 1e-4, &mut notes).unwrap(),
            [1.0, 3.0, 4.0]
        );
        let sized = CrystalConfig {
            size_mm: Some([0.010049, 0.010049, 0.001005]),
            ..cr
        };
        // a 5.0049 um beam clips the 10.049 um height, not the 1.005 um width
        let n = n_from_size(&sized, [1e-8; 3], 5.0049e-6, &mut notes).unwrap();
        assert_eq!(n, [1005.0, 501.0, 101.0]);
        assert_eq!(notes.len(), 1);
        assert!(
            notes[0].contains("m high) with beam (0.0000050049 m)"),
            "{}",
            notes[0]
        );
    }

    #[test]
    fn structure_factors_from_reflections() {
        let budget = RenderBudget::new(8, 8, false, &LIMIT);
        let cr = CrystalConfig {
            hkl_file: Some("x.hkl".into()),
            ..cubic()
        };
        let r: Vec<Reflection> = vec![([0, 0, 1], 5.0), ([1, -1, 0], 7.0)];
        let g = structure_factors(
            &cr,
            Some(InputFile::data("/d/x.hkl", r)),
            2.0,
            &budget,
            [1; 3],
        )
        .unwrap()
        .unwrap();
        assert_eq!(
            (g.get(0, 0, 1), g.get(1, -1, 0), g.get(0, 0, 0)),
            (Some(5.0), Some(7.0), Some(2.0))
        );
        assert!(interpolate(&cr, Some(&g), [2.0, 5.0, 5.0]));
        assert!(!interpolate(&cr, Some(&g), [3.0, 5.0, 5.0]));
        assert!(!interpolate(&cr, None, [1.0; 3]));
        let wide = vec![([-1000, -1000, -1000], 1.0), ([1000, 1000, 1000], 1.0)];
        let e = structure_factors(
            &cr,
            Some(InputFile::data("/d/x.hkl", wide)),
            2.0,
            &budget,
            [1; 3],
        )
        .unwrap_err()
        .to_string();
        assert_eq!(
            e,
            "crystal.hkl_file: /d/x.hkl: index range too large (8012006001 grid points)"
        );
        let none = CrystalConfig {
            default_f: 0.0,
            ..cubic()
        };
        let e = structure_factors(&none, None, 0.0, &budget, [1; 3]).unwrap_err();
        assert!(e
            .to_string()
            .starts_with("crystal.default_f: is 0 and no crystal.hkl_file"));
    }
}
