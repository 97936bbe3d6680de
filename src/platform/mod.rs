//! The bottom layer: what every other module may use and nothing here
//! imports from above. Process signals and the registry of temporary files
//! (`signals`), and standard output and error that never panic (`stream`,
//! with the [`outln!`](crate::outln), [`out!`](crate::out) and
//! [`errln!`](crate::errln) macros at the crate root).

pub mod signals;
pub mod stream;
