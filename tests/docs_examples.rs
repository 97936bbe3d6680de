//! The worked examples of docs/experiments.md are real: every ```toml block
//! is saved as an experiment file in `experiments/` of a scratch tree (files
//! it names are copied there from the repository, at the same relative
//! path) and `runner plan` must accept it. Every probe kind has an example.

use std::fs;
use std::path::Path;

#[macro_use]
mod common;
use common::*;

/// The ```toml blocks of a Markdown text, with the line each starts on.
fn toml_blocks(md: &str) -> Vec<(usize, String)> {
    let mut out = Vec::new();
    let mut cur: Option<(usize, String)> = None;
    for (i, line) in md.lines().enumerate() {
        match &mut cur {
            None if line.trim_start().starts_with("```toml") => cur = Some((i + 1, String::new())),
            Some(_) if line.trim_start().starts_with("```") => out.extend(cur.take()),
            Some((_, text)) => {
                text.push_str(line);
                text.push('\n');
            }
            None => {}
        }
    }
    assert!(cur.is_none(), "an unterminated ```toml block");
    out
}

/// Copy every relative path a probe or the model names (`reference = "..."`,
/// `observed`, `mask`, `hkl_file`, `mosflm_matrix`) from the repository's experiments/ to the
/// scratch tree's.
fn copy_inputs(block: &str, scratch: &Path) {
    for line in block.lines() {
        let Some((key, value)) = line.split_once('=') else {
            continue;
        };
        if !["reference", "hkl_file", "mosflm_matrix", "observed", "mask"].contains(&key.trim()) {
            continue;
        }
        let rel = value.trim().trim_matches('"');
        if rel == "synthetic" {
            continue;
        }
        let from = manifest_dir().join("experiments").join(rel);
        let to = scratch.join("experiments").join(rel);
        fs::create_dir_all(to.parent().unwrap()).unwrap();
        fs::copy(&from, &to).unwrap_or_else(|e| panic!("{}: {e}", from.display()));
    }
}

#[test]
fn every_toml_example_in_the_docs_plans() {
    let md = fs::read_to_string(manifest_dir().join("docs/experiments.md")).unwrap();
    let blocks = toml_blocks(&md);
    assert!(blocks.len() >= 5, "{} examples", blocks.len());
    let mut kinds = std::collections::BTreeSet::new();
    for (line, block) in &blocks {
        let t: toml::Table = toml::from_str(block)
            .unwrap_or_else(|e| panic!("docs/experiments.md:{line}: not TOML: {e}"));
        for p in t["probe"].as_array().unwrap() {
            kinds.insert(p["kind"].as_str().unwrap().to_string());
        }
        let scratch = tempfile::tempdir().unwrap();
        fs::create_dir_all(scratch.path().join("experiments")).unwrap();
        copy_inputs(block, scratch.path());
        let file = write(&scratch.path().join("experiments"), "example.toml", block);
        let mut c = runner();
        c.arg("plan").arg(&file);
        let (code, stdout, stderr) = run_cmd(c);
        assert_eq!(
            code, 0,
            "docs/experiments.md:{line}: runner plan refused the example:\n{stderr}"
        );
        assert!(stdout.contains("cell(s)"), "{stdout}");
    }
    let all: std::collections::BTreeSet<String> = [
        "gradcheck",
        "phi-cache",
        "parity",
        "simulate",
        "benchmark",
        "refine",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    assert_eq!(kinds, all, "an example of every probe kind");
}

#[test]
fn the_readme_links_the_experiment_docs() {
    let readme = fs::read_to_string(manifest_dir().join("README.md")).unwrap();
    assert!(readme.contains("(docs/experiments.md)"));
}
