//! One render split by rows: the pixels of a ROI (in C loop order, slow
//! index outermost) cut into bands of whole rows, each rendered apart (on
//! its own GPU for `cuda:all`, see `cuda::render_all`) and stitched back.
//!
//! A pixel's value depends on two things beyond the pixel itself, both
//! fixed by the whole ROI in C loop order: which pixel holds the image's
//! first phi sweep (c-parity carryover), and the first out-of-range
//! structure-factor lookup, after which C looks F up nearest for good. A
//! part therefore renders with the whole ROI's first-sweep pixel index, and
//! the switch is the first one over the parts in order
//! ([`first_switch`]); the pixels from it on are rendered again
//! ([`redo_range`]). Each pixel is then computed exactly as in one render,
//! so the stitched image equals it bit for bit (tests/row_split.rs on the
//! CPU engine, tests/cuda_parity.rs for `cuda:all` against `cuda:0`).

use std::ops::Range;

/// `rows` rows cut into at most `parts` bands of consecutive rows whose
/// sizes differ by at most one (the first ones larger), none empty: fewer
/// bands than `parts` when there are fewer rows. No rows, no bands.
pub fn row_bands(rows: usize, parts: usize) -> Vec<Range<usize>> {
    let parts = parts.max(1).min(rows);
    let mut out = Vec::with_capacity(parts);
    let mut start = 0;
    for k in 0..parts {
        let len = rows / parts + usize::from(k < rows % parts);
        out.push(start..start + len);
        start += len;
    }
    out
}

/// The pixel-index ranges of the row bands of `npix` pixels in C loop
/// order, `slow_of(i)` being the slow (row) index of pixel i (never
/// decreasing with i): the rows from the first pixel's to the last's cut
/// into at most `parts` bands ([`row_bands`]), each band the pixels whose
/// row lies in it. Empty bands (rows a mask leaves empty) are left out; the
/// ranges are in order and cover `0..npix`.
pub fn pixel_ranges(
    npix: usize,
    slow_of: impl Fn(usize) -> usize,
    parts: usize,
) -> Vec<Range<usize>> {
    if npix == 0 {
        return vec![];
    }
    let (first, last) = (slow_of(0), slow_of(npix - 1));
    let mut out = vec![];
    let mut start = 0;
    for band in row_bands(last + 1 - first, parts) {
        let end_row = first + band.end;
        // first pixel at or past the band's end (rows never decrease)
        let (mut lo, mut hi) = (start, npix);
        while lo < hi {
            let mid = lo + (hi - lo) / 2;
            if slow_of(mid) < end_row {
                lo = mid + 1;
            } else {
                hi = mid;
            }
        }
        if lo > start {
            out.push(start..lo);
        }
        start = lo;
    }
    debug_assert_eq!(start, npix);
    out
}

/// C's switch to nearest lookup over parts rendered in order: the first
/// part's first out-of-range lookup, as (pixel index in the whole ROI,
/// whatever the engine records with it).
pub fn first_switch<E: Copy>(per_part: &[Option<(usize, E)>]) -> Option<(usize, E)> {
    per_part.iter().flatten().next().copied()
}

/// The pixels of `part` to render again once the switch is at pixel
/// `switch` (pixel `switch` itself with the switch, those after it
/// nearest); None when the part lies wholly before it.
pub fn redo_range(part: &Range<usize>, switch: usize) -> Option<Range<usize>> {
    let from = part.start.max(switch);
    (from < part.end).then_some(from..part.end)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bands_are_even_and_cover_the_rows() {
        assert_eq!(row_bands(10, 3), vec![0..4, 4..7, 7..10]);
        assert_eq!(row_bands(2, 5), vec![0..1, 1..2]);
        assert_eq!(row_bands(4, 0), vec![0..4]);
        assert!(row_bands(0, 3).is_empty());
        for rows in 0..40 {
            for parts in 1..45 {
                let b = row_bands(rows, parts);
                assert_eq!(b.len(), parts.min(rows));
                assert!(b.iter().all(|r| !r.is_empty()));
                assert_eq!(b.iter().map(|r| r.len()).sum::<usize>(), rows);
                for w in b.windows(2) {
                    assert_eq!(w[0].end, w[1].start);
                    assert!(w[0].len() >= w[1].len() && w[0].len() <= w[1].len() + 1);
                }
            }
        }
    }

    #[test]
    fn pixel_ranges_follow_rows() {
        // rows 3..=5 of a 4-wide ROI starting at row 3
        let slow = |i: usize| 3 + i / 4;
        assert_eq!(pixel_ranges(12, slow, 2), vec![0..8, 8..12]);
        assert_eq!(pixel_ranges(12, slow, 7), vec![0..4, 4..8, 8..12]);
        assert!(pixel_ranges(0, slow, 2).is_empty());
        // a masked list with an empty row (row 1) and a row of one pixel
        let rows = [0usize, 0, 2, 2, 2, 3];
        let r = pixel_ranges(rows.len(), |i| rows[i], 4);
        assert_eq!(r, vec![0..2, 2..5, 5..6]);
    }

    #[test]
    fn switch_is_the_first_parts() {
        assert_eq!(first_switch::<i32>(&[None, None]), None);
        assert_eq!(
            first_switch(&[None, Some((7, 2)), Some((9, 1))]),
            Some((7, 2))
        );
        assert_eq!(redo_range(&(0..5), 7), None);
        assert_eq!(redo_range(&(5..10), 7), Some(7..10));
        assert_eq!(redo_range(&(10..12), 7), Some(10..12));
    }
}
