//! The contents of a configuration's input files, as plain data. The model
//! reads no files: a caller (`engine::prepare` for every command) reads the
//! files a [`SimConfig`](super::config::SimConfig) names with `crate::io` and
//! hands the results here; [`Simulation::from_inputs`](super::Simulation)
//! turns configuration and contents into a simulation.
//!
//! A file that could not be read is kept as its error: the resolvers report
//! it under the configuration key (`crystal.hkl_file: ...`) at the point of
//! the resolution where the file matters, as when they read files themselves.

use super::error::{invalid, SetupError};
use crate::io::hkl::Reflection;
use crate::io::smv::SmvImage;
use crate::io::IoError;
use std::path::{Path, PathBuf};

/// One input file: where it was read from and what reading it gave.
#[derive(Debug)]
pub struct InputFile<T> {
    /// The path read (relative paths already resolved); named in messages.
    pub path: PathBuf,
    /// What reading it gave: the contents, or the error to report under the file's key.
    pub read: Result<T, IoError>,
}

impl<T> InputFile<T> {
    /// Contents already in memory (tests, callers that build inputs).
    pub fn data(path: impl Into<PathBuf>, data: T) -> Self {
        InputFile {
            path: path.into(),
            read: Ok(data),
        }
    }
}

/// What the configuration's files contain, and the memory limit the
/// resolution checks allocations against.
#[derive(Debug)]
pub struct Inputs {
    /// `crystal.hkl_file`: the reflections, (h, k, l) and F.
    pub hkl: Option<InputFile<Vec<Reflection>>>,
    /// `crystal.mosflm_matrix`: [a*, b*, c*] (Å^-1 · λ), as the file's columns.
    pub mosflm_matrix: Option<InputFile<[[f64; 3]; 3]>>,
    /// `beam.source_file`: X, Y, Z, weight, λ per source (NaN where absent).
    pub sources: Option<InputFile<Vec<[f64; 5]>>>,
    /// `detector.mask_file`: an SMV image, pixels with value 0 are skipped.
    pub mask: Option<InputFile<SmvImage>>,
    /// The memory limit (bytes) and where it comes from (`io::memory::limit`).
    pub memory_limit: (u64, String),
}

impl Inputs {
    /// No files; the given memory limit.
    pub fn none(memory_limit: (u64, String)) -> Self {
        Inputs {
            hkl: None,
            mosflm_matrix: None,
            sources: None,
            mask: None,
            memory_limit,
        }
    }
}

/// The contents of the file the configuration key `key` names (`named`), or
/// the reason there are none, as an error naming `key`.
pub(crate) fn contents<T>(
    key: &str,
    named: Option<&PathBuf>,
    input: Option<InputFile<T>>,
) -> Result<Option<(PathBuf, T)>, SetupError> {
    match (named, input) {
        (Some(p), input) => required(key, p, input).map(Some),
        (None, None) => Ok(None),
        (None, Some(f)) => Err(invalid(
            key,
            format!(
                "contents of {} were passed in, but the configuration names no file",
                f.path.display()
            ),
        )),
    }
}

/// The contents (and the path read) of the file `named` that `key` names.
pub(crate) fn required<T>(
    key: &str,
    named: &Path,
    input: Option<InputFile<T>>,
) -> Result<(PathBuf, T), SetupError> {
    match input {
        Some(InputFile {
            path,
            read: Ok(data),
        }) => Ok((path, data)),
        Some(InputFile { read: Err(e), .. }) => Err(invalid(key, e.to_string())),
        None => Err(invalid(
            key,
            format!("{}: its contents were not passed in", named.display()),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn contents_match_the_configuration() {
        let p = PathBuf::from("a.hkl");
        let got = contents(
            "crystal.hkl_file",
            Some(&p),
            Some(InputFile::data("/x/a.hkl", 7)),
        );
        assert_eq!(got.unwrap(), Some((PathBuf::from("/x/a.hkl"), 7)));
        assert!(contents::<i32>("k", None, None).unwrap().is_none());
        let e = contents::<i32>("crystal.hkl_file", Some(&p), None).unwrap_err();
        assert!(e.to_string().starts_with("crystal.hkl_file: a.hkl:"), "{e}");
        let e = contents("beam.source_file", None, Some(InputFile::data("s.txt", 1))).unwrap_err();
        assert!(e.to_string().contains("names no file"), "{e}");
        let read = InputFile::<i32> {
            path: "/x/a.hkl".into(),
            read: Err(IoError::line(&PathBuf::from("/x/a.hkl"), 3, "bad")),
        };
        let e = contents("crystal.hkl_file", Some(&p), Some(read)).unwrap_err();
        assert_eq!(e.to_string(), "crystal.hkl_file: /x/a.hkl:3: bad");
    }
}
