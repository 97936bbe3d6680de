//! A simulation prepared from a configuration and the files it names: the
//! files are read here, with `crate::io`; the model resolves configuration
//! and contents without reading anything ([`Simulation::from_inputs`]).

use crate::io::{self, IoError};
use crate::physics::config::SimConfig;
use crate::physics::inputs::{InputFile, Inputs};
use crate::physics::{SetupError, Simulation};
use std::path::Path;

impl Simulation {
    /// Read the files `cfg` names (relative paths from `base_dir`) and
    /// resolve it. A file that cannot be read is refused under its key when
    /// the resolution reaches it.
    pub fn prepare(cfg: &SimConfig, base_dir: &Path) -> Result<Simulation, SetupError> {
        Simulation::from_inputs(cfg, read_inputs(cfg, base_dir))
    }
}

/// The contents of every file `cfg` names, relative paths taken from
/// `base_dir`, each read error kept; and the process's memory limit.
pub fn read_inputs(cfg: &SimConfig, base_dir: &Path) -> Inputs {
    fn read<T>(base_dir: &Path, p: &Path, f: fn(&Path) -> Result<T, IoError>) -> InputFile<T> {
        let path = if p.is_absolute() {
            p.to_path_buf()
        } else {
            base_dir.join(p)
        };
        InputFile {
            read: f(&path),
            path,
        }
    }
    let (cr, bm, det) = (&cfg.crystal, &cfg.beam, &cfg.detector);
    Inputs {
        hkl: cr
            .hkl_file
            .as_ref()
            .map(|p| read(base_dir, p, io::hkl::read_hkl)),
        mosflm_matrix: cr
            .mosflm_matrix
            .as_ref()
            .map(|p| read(base_dir, p, io::mosflm::read_matrix)),
        sources: bm
            .source_file
            .as_ref()
            .map(|p| read(base_dir, p, io::sources::read_sources)),
        mask: det
            .mask_file
            .as_ref()
            .map(|p| read(base_dir, p, io::smv::read_smv)),
        memory_limit: io::memory::limit(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Relative paths are read from the base folder, absolute ones as they
    /// are; a missing file is kept as its error, naming the path read.
    #[test]
    fn files_are_read_from_the_base_folder() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("a.hkl"), "1 2 3 4.5\n").unwrap();
        let mut cfg = SimConfig::default();
        cfg.crystal.hkl_file = Some("a.hkl".into());
        cfg.crystal.mosflm_matrix = Some(dir.path().join("none.mat"));
        let inputs = read_inputs(&cfg, dir.path());
        let hkl = inputs.hkl.unwrap();
        assert_eq!(hkl.path, dir.path().join("a.hkl"));
        assert_eq!(hkl.read.unwrap(), [([1, 2, 3], 4.5)]);
        let mat = inputs.mosflm_matrix.unwrap();
        let e = mat.read.unwrap_err().to_string();
        assert!(e.contains("none.mat") && e.contains("cannot read"), "{e}");
        assert!(inputs.sources.is_none() && inputs.mask.is_none());
    }
}
