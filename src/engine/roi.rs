//! The region of interest both engines render: the checked ROI and its
//! pixels in C loop order (spec-a-core: the ROI bounds the fast/slow loops;
//! masked pixels are skipped).

use crate::engine::EngineError;
use crate::physics::Simulation;

/// The ROI to render: the option's, else the configuration's; inside the detector.
pub fn check_roi(sim: &Simulation, roi: Option<[u32; 4]>) -> Result<[u32; 4], EngineError> {
    let r = roi.unwrap_or(sim.roi());
    if r[0] > r[1]
        || r[2] > r[3]
        || r[1] as usize >= sim.fpixels()
        || r[3] as usize >= sim.spixels()
    {
        return Err(EngineError::Failed(format!(
            "roi {:?} is not inside the {} x {} detector",
            r,
            sim.fpixels(),
            sim.spixels()
        )));
    }
    Ok(r)
}

/// Pixels of the ROI in C loop order (slow outer, fast inner), masked ones
/// skipped: the pixels both engines render, in the order the phi carryover
/// and the interpolation switch-off follow.
pub fn roi_pixels(sim: &Simulation, roi: [u32; 4]) -> Vec<(usize, usize)> {
    let fp = sim.fpixels();
    let masked = |f: usize, s: usize| {
        sim.mask
            .as_ref()
            .map(|m| m[s * fp + f] == 0)
            .unwrap_or(false)
    };
    (roi[2] as usize..=roi[3] as usize)
        .flat_map(|s| (roi[0] as usize..=roi[1] as usize).map(move |f| (f, s)))
        .filter(|(f, s)| !masked(*f, *s))
        .collect()
}
