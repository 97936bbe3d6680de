//! Structure factors: the HKL grid, nearest lookup and tricubic interpolation
//! (spec-a-core "Structure factor F_cell", "Interpolation & Fallbacks").

use crate::io::hkl::Reflection;

/// F on the integer grid [h_min..=h_max] x [k_min..=k_max] x [l_min..=l_max],
/// l fastest. Points the file does not list hold the fill value (default_F).
#[derive(Clone, Debug, PartialEq)]
pub struct HklGrid {
    /// Smallest h on the grid (C's h_min).
    pub h_min: i32,
    /// Largest h on the grid (C's h_max).
    pub h_max: i32,
    /// Smallest k on the grid (C's k_min).
    pub k_min: i32,
    /// Largest k on the grid (C's k_max).
    pub k_max: i32,
    /// Smallest l on the grid (C's l_min).
    pub l_min: i32,
    /// Largest l on the grid (C's l_max).
    pub l_max: i32,
    /// F at every grid point, h outermost and l innermost.
    pub data: Vec<f64>,
    /// Number of reflections read from the file.
    pub count: usize,
}

impl HklGrid {
    /// A grid over `min..=max` in (h, k, l), every point `fill`.
    pub fn new(min: [i32; 3], max: [i32; 3], fill: f64) -> Self {
        let n =
            ((max[0] - min[0] + 1) * (max[1] - min[1] + 1) * (max[2] - min[2] + 1)).max(0) as usize;
        HklGrid {
            h_min: min[0],
            h_max: max[0],
            k_min: min[1],
            k_max: max[1],
            l_min: min[2],
            l_max: max[2],
            data: vec![fill; n],
            count: 0,
        }
    }
    /// The grid spanned by `reflections` (as nanoBragg's first pass over the
    /// file finds it), prefilled with `fill` (default_F); a reflection
    /// listed twice keeps its last value. Check [`HklGrid::points`] first.
    pub fn from_reflections(reflections: &[Reflection], fill: f64) -> Self {
        let (min, max) = bounds(reflections);
        let mut grid = HklGrid::new(min, max, fill);
        for ([h, k, l], f) in reflections {
            grid.set(*h, *k, *l, *f);
        }
        grid.count = reflections.len();
        grid
    }

    /// Points of the grid `reflections` span (checked: u64::MAX on
    /// overflow; 0 without reflections).
    pub fn points(reflections: &[Reflection]) -> u64 {
        if reflections.is_empty() {
            return 0;
        }
        let (min, max) = bounds(reflections);
        (0..3)
            .map(|j| (max[j] as i64 - min[j] as i64 + 1) as u64)
            .try_fold(1u64, |a, x| a.checked_mul(x))
            .unwrap_or(u64::MAX)
    }

    #[inline(always)]
    fn index(&self, h: i32, k: i32, l: i32) -> usize {
        let kr = (self.k_max - self.k_min + 1) as usize;
        let lr = (self.l_max - self.l_min + 1) as usize;
        ((h - self.h_min) as usize * kr + (k - self.k_min) as usize) * lr
            + (l - self.l_min) as usize
    }
    /// Whether (h, k, l) lies on the grid.
    #[inline(always)]
    pub fn contains(&self, h: i32, k: i32, l: i32) -> bool {
        h >= self.h_min
            && h <= self.h_max
            && k >= self.k_min
            && k <= self.k_max
            && l >= self.l_min
            && l <= self.l_max
    }
    /// Set F at (h, k, l), which must lie on the grid.
    pub fn set(&mut self, h: i32, k: i32, l: i32, f: f64) {
        let i = self.index(h, k, l);
        self.data[i] = f;
    }
    /// F at (h, k, l); None off the grid.
    #[inline(always)]
    pub fn get(&self, h: i32, k: i32, l: i32) -> Option<f64> {
        if self.contains(h, k, l) {
            Some(self.data[self.index(h, k, l)])
        } else {
            None
        }
    }
    /// Unchecked read for indices known to be inside.
    #[inline(always)]
    pub fn at(&self, h: i32, k: i32, l: i32) -> f64 {
        self.data[self.index(h, k, l)]
    }
}

/// Smallest and largest h, k, l.
fn bounds(reflections: &[Reflection]) -> ([i32; 3], [i32; 3]) {
    let mut min = [i32::MAX; 3];
    let mut max = [i32::MIN; 3];
    for (hkl, _) in reflections {
        for j in 0..3 {
            min[j] = min[j].min(hkl[j]);
            max[j] = max[j].max(hkl[j]);
        }
    }
    (min, max)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grid_bounds_values_and_default() {
        let r: Vec<Reflection> = vec![
            ([1, 2, 3], 10.5),
            ([-1, 0, 5], 2.0),
            ([0, -2, 3], 7.0),
            ([1, 2, 3], 11.0),
        ];
        assert_eq!(HklGrid::points(&r), 3 * 5 * 3);
        let g = HklGrid::from_reflections(&r, 3.0);
        assert_eq!(
            (g.h_min, g.h_max, g.k_min, g.k_max, g.l_min, g.l_max),
            (-1, 1, -2, 2, 3, 5)
        );
        assert_eq!(g.count, 4);
        assert_eq!(g.get(1, 2, 3), Some(11.0));
        assert_eq!(g.get(-1, 0, 5), Some(2.0));
        assert_eq!(g.get(0, -2, 3), Some(7.0));
        assert_eq!(g.get(0, 0, 4), Some(3.0));
        assert_eq!(g.get(2, 0, 4), None);
        assert_eq!(g.data.len(), 3 * 5 * 3);
        // l fastest, then k, then h: (-1, 0, 5) is point (0 * 5 + 2) * 3 + 2
        assert_eq!(g.data[8], 2.0);
    }

    #[test]
    fn points_overflow_and_empty() {
        assert_eq!(HklGrid::points(&[]), 0);
        let wide = [
            ([-1_000_000, -1_000_000, -1_000_000], 1.0),
            ([1_000_000; 3], 1.0),
        ];
        assert_eq!(HklGrid::points(&wide), 2_000_001u64.pow(3));
        let huge = [([i32::MIN; 3], 1.0), ([i32::MAX; 3], 1.0)];
        assert_eq!(HklGrid::points(&huge), u64::MAX);
    }
}
