//! Structure factors: the HKL grid, nearest lookup and tricubic interpolation
//! (spec-a-core "Structure factor F_cell", "Interpolation & Fallbacks").

/// F on the integer grid [h_min..=h_max] x [k_min..=k_max] x [l_min..=l_max],
/// l fastest. Points the file does not list hold the fill value (default_F).
#[derive(Clone, Debug, PartialEq)]
pub struct HklGrid {
    pub h_min: i32,
    pub h_max: i32,
    pub k_min: i32,
    pub k_max: i32,
    pub l_min: i32,
    pub l_max: i32,
    pub data: Vec<f64>,
    /// Number of reflections read from the file.
    pub count: usize,
}

impl HklGrid {
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
    #[inline(always)]
    fn index(&self, h: i32, k: i32, l: i32) -> usize {
        let kr = (self.k_max - self.k_min + 1) as usize;
        let lr = (self.l_max - self.l_min + 1) as usize;
        ((h - self.h_min) as usize * kr + (k - self.k_min) as usize) * lr
            + (l - self.l_min) as usize
    }
    #[inline(always)]
    pub fn contains(&self, h: i32, k: i32, l: i32) -> bool {
        h >= self.h_min
            && h <= self.h_max
            && k >= self.k_min
            && k <= self.k_max
            && l >= self.l_min
            && l <= self.l_max
    }
    pub fn set(&mut self, h: i32, k: i32, l: i32, f: f64) {
        let i = self.index(h, k, l);
        self.data[i] = f;
    }
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
