//! Every evidence bundle committed under runs/published/ still verifies:
//! `runner verify` accepts it (every file listed in sha256.txt, none
//! missing, none added).

mod common;
use common::{manifest_dir, runner};

fn bundles(dir: &std::path::Path, out: &mut Vec<std::path::PathBuf>) {
    if dir.join("sha256.txt").is_file() {
        out.push(dir.to_path_buf());
        return;
    }
    if let Ok(rd) = std::fs::read_dir(dir) {
        let mut subs: Vec<_> = rd
            .flatten()
            .map(|e| e.path())
            .filter(|p| p.is_dir())
            .collect();
        subs.sort();
        for s in subs {
            bundles(&s, out);
        }
    }
}

#[test]
fn published_bundles_verify() {
    let mut found = vec![];
    bundles(&manifest_dir().join("runs/published"), &mut found);
    // cpu (m2h3, 2 benchmarks), h100 (m2h3, 2 benchmarks, the baseline
    // benchmark), h100x2 (m2h3, 2 multi-GPU runs)
    assert!(
        found.len() >= 10,
        "only {} bundles found: {found:?}",
        found.len()
    );
    for b in &found {
        runner().arg("verify").arg(b).assert().success();
    }
}
