//! Sharding: `runner run FILE --shard K/N` runs a deterministic 1/N of the
//! planned cells (the cell at position i of the plan belongs to shard
//! `i % N + 1`; the plan is the expanded matrix order after `--only`, the
//! same on every machine). A shard bundle records what it is in `shard.json`:
//! the shard, the experiment id, a digest of the resolved configuration and
//! the full list of planned cell ids, so that `runner merge` can check that
//! shards belong together and that no cell is missing or duplicated.
//!
//! `runner plan FILE --format github --shards N` prints the strategy matrix a
//! GitHub Actions job reads with `fromJSON`; `--format slurm` prints the
//! `#SBATCH --array` range.

use super::config::ResolvedExperiment;
use super::matrix::Cell;
use super::InputError;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// The name of the shard record in a shard bundle.
pub const SHARD_FILE: &str = "shard.json";

/// One shard: K of N (1-based).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Shard {
    pub k: usize,
    pub n: usize,
}

impl std::fmt::Display for Shard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.k, self.n)
    }
}

impl std::str::FromStr for Shard {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let bad = || format!("--shard '{s}': expected K/N with 1 <= K <= N (e.g. 2/4)");
        let (k, n) = s.trim().split_once('/').ok_or_else(bad)?;
        let k: usize = k.trim().parse().map_err(|_| bad())?;
        let n: usize = n.trim().parse().map_err(|_| bad())?;
        if n == 0 || k == 0 || k > n {
            return Err(bad());
        }
        Ok(Shard { k, n })
    }
}

impl Shard {
    /// Does the cell at `position` of the plan belong to this shard?
    pub fn owns(&self, position: usize) -> bool {
        position % self.n == self.k - 1
    }
    /// The folder-name suffix of a shard bundle.
    pub fn suffix(&self) -> String {
        format!("shard-{}-of-{}", self.k, self.n)
    }
}

/// `shard.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ShardRecord {
    /// "K/N".
    pub shard: String,
    pub experiment: String,
    /// SHA-256 of the resolved configuration (see [`config_digest`]).
    pub config_digest: String,
    /// Every planned cell id, in plan order (all shards).
    pub planned: Vec<String>,
    /// The cells of this shard, in plan order.
    pub cells: Vec<String>,
}

/// SHA-256 of the resolved configuration, independent of where the file was
/// (the comments of experiment.toml name its path; this digest does not).
pub fn config_digest(resolved: &ResolvedExperiment) -> String {
    let body = toml::to_string_pretty(resolved).unwrap_or_default();
    hex::encode(Sha256::digest(body.as_bytes()))
}

/// Keep the cells of one shard (positions in the plan).
pub fn select(cells: Vec<Cell>, shard: Shard) -> Vec<Cell> {
    cells
        .into_iter()
        .enumerate()
        .filter(|(i, _)| shard.owns(*i))
        .map(|(_, c)| c)
        .collect()
}

/// The shard record of a run.
pub fn record(resolved: &ResolvedExperiment, planned: &[Cell], shard: Shard) -> ShardRecord {
    let ids: Vec<String> = planned.iter().map(|c| c.id.clone()).collect();
    ShardRecord {
        shard: shard.to_string(),
        experiment: resolved.experiment.id.clone(),
        config_digest: config_digest(resolved),
        cells: ids
            .iter()
            .enumerate()
            .filter(|(i, _)| shard.owns(*i))
            .map(|(_, c)| c.clone())
            .collect(),
        planned: ids,
    }
}

/// The number of shards actually used: at least 1, at most the cell count.
pub fn effective_shards(requested: usize, cells: usize) -> usize {
    requested.max(1).min(cells.max(1))
}

/// `runner plan --format github`: `{"shard":["1/N",...,"N/N"]}` (one line).
pub fn github_matrix(requested: usize, cells: usize) -> String {
    let n = effective_shards(requested, cells);
    let list: Vec<String> = (1..=n).map(|k| format!("{k}/{n}")).collect();
    serde_json::json!({ "shard": list }).to_string()
}

/// `runner plan --format slurm`: the `--array` range, `1-N`.
pub fn slurm_range(requested: usize, cells: usize) -> String {
    format!("1-{}", effective_shards(requested, cells))
}

/// Check `--shards N`.
pub fn check_shards(n: usize) -> Result<(), InputError> {
    if n == 0 {
        return Err(InputError("--shards 0: must be at least 1".into()));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_and_own() {
        let s: Shard = "2/3".parse().unwrap();
        assert_eq!(s, Shard { k: 2, n: 3 });
        assert_eq!(s.to_string(), "2/3");
        let owned: Vec<usize> = (0..7).filter(|i| s.owns(*i)).collect();
        assert_eq!(owned, vec![1, 4]);
        for bad in ["0/3", "4/3", "1/0", "x/2", "2", "1/2/3", ""] {
            assert!(bad.parse::<Shard>().is_err(), "{bad}");
        }
        // Every position belongs to exactly one shard.
        for n in 1..6 {
            for i in 0..20 {
                let owners = (1..=n).filter(|&k| Shard { k, n }.owns(i)).count();
                assert_eq!(owners, 1);
            }
        }
    }

    #[test]
    fn plan_formats() {
        assert_eq!(
            github_matrix(4, 10),
            r#"{"shard":["1/4","2/4","3/4","4/4"]}"#
        );
        assert_eq!(github_matrix(4, 2), r#"{"shard":["1/2","2/2"]}"#);
        assert_eq!(slurm_range(4, 10), "1-4");
        assert_eq!(slurm_range(8, 3), "1-3");
    }
}
