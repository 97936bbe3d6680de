//! Image metrics: how closely a render matches a reference image. One
//! definition, with one rule for images that are all zero or constant, for
//! the parity probe and the tests.

/// How a render compares with a reference over the same pixels.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ImageComparison {
    /// Pearson correlation; 1 when both images are constant and equal, 0
    /// when only one of them is constant (or they are constant and differ).
    pub correlation: f64,
    /// sum(render) / sum(reference); 1 when both sums are 0, infinite when
    /// only the reference's is.
    pub sum_ratio: f64,
    /// max |render - reference|.
    pub max_abs_diff: f64,
    /// max |reference|.
    pub reference_max: f64,
    /// max_abs_diff / reference_max; 0 when both are 0, infinite when only
    /// the reference is all zero.
    pub max_rel_diff: f64,
    /// sum(render).
    pub sum: f64,
}

/// Compare `ours` with `reference`, pixel by pixel (same length).
pub fn compare_images(ours: &[f64], reference: &[f64]) -> ImageComparison {
    let n = ours.len() as f64;
    let (ms, mr) = (
        ours.iter().sum::<f64>() / n,
        reference.iter().sum::<f64>() / n,
    );
    let (mut sxy, mut sxx, mut syy) = (0.0, 0.0, 0.0);
    let mut max_abs: f64 = 0.0;
    let mut ref_max: f64 = 0.0;
    for (x, y) in ours.iter().zip(reference) {
        sxy += (x - ms) * (y - mr);
        sxx += (x - ms) * (x - ms);
        syy += (y - mr) * (y - mr);
        max_abs = max_abs.max((x - y).abs());
        ref_max = ref_max.max(y.abs());
    }
    let correlation = if sxx > 0.0 && syy > 0.0 {
        sxy / (sxx * syy).sqrt()
    } else if sxx == 0.0 && syy == 0.0 && max_abs == 0.0 {
        1.0
    } else {
        0.0
    };
    let (ssum, rsum) = (ours.iter().sum::<f64>(), reference.iter().sum::<f64>());
    let sum_ratio = if rsum != 0.0 {
        ssum / rsum
    } else if ssum == 0.0 {
        1.0
    } else {
        f64::INFINITY
    };
    let max_rel_diff = if ref_max > 0.0 {
        max_abs / ref_max
    } else if max_abs == 0.0 {
        0.0
    } else {
        f64::INFINITY
    };
    ImageComparison {
        correlation,
        sum_ratio,
        max_abs_diff: max_abs,
        reference_max: ref_max,
        max_rel_diff,
        sum: ssum,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identical_scaled_and_degenerate_images() {
        let a = [1.0, 2.0, 3.0, 4.0];
        let same = compare_images(&a, &a);
        assert_eq!(same.correlation, 1.0);
        assert_eq!(same.sum_ratio, 1.0);
        assert_eq!(same.max_rel_diff, 0.0);
        let twice: Vec<f64> = a.iter().map(|x| 2.0 * x).collect();
        let c = compare_images(&twice, &a);
        assert!((c.correlation - 1.0).abs() < 1e-12);
        assert_eq!(c.sum_ratio, 2.0);
        assert_eq!(c.max_abs_diff, 4.0);
        assert_eq!(c.max_rel_diff, 1.0);
        let zero = [0.0; 4];
        let z = compare_images(&zero, &zero);
        assert_eq!(
            (z.correlation, z.sum_ratio, z.max_rel_diff),
            (1.0, 1.0, 0.0)
        );
        let one_zero = compare_images(&a, &zero);
        assert_eq!(one_zero.correlation, 0.0);
        assert_eq!(one_zero.sum_ratio, f64::INFINITY);
        assert_eq!(one_zero.max_rel_diff, f64::INFINITY);
    }
}
