//! The layers of the crate point one way (issue 13). Every `src/**/*.rs` is
//! read for its `crate::...` and `super::...` paths (in `use` items and in
//! code; comments and string literals are skipped); each file belongs to a
//! layer, bottom to top:
//!
//! platform < io < physics < engine < refine < experiment < evidence < cli
//!
//! (`refine` fits parameters with the engine's Jacobian and reads images
//! through io; the experiment layer's `refine` probe uses it)
//!
//! (`lib.rs` and `main.rs` are the root and belong to none). A file may use
//! its own layer or a lower one. The test fails on an upward edge, and on a
//! cycle between files of one layer, unless the edge is in [`ALLOWED`].
//! The checker is a plain function, tested on planted input below too, so
//! that this test cannot pass vacuously.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

/// Edges that may break the rule: (from file, to file), both relative to
/// src/, each with the reason. Empty: no exception.
const ALLOWED: &[(&str, &str)] = &[];

/// The layers, bottom first; modules of one entry share a layer.
const LAYERS: &[&[&str]] = &[
    &["platform"],
    &["io"],
    &["physics"],
    &["engine"],
    &["refine"],
    &["experiment"],
    &["evidence"],
    &["cli"],
];

/// Macros exported at the crate root, and the module that defines them.
const ROOT_MACROS: &[(&str, &str)] = &[
    ("outln", "platform/stream.rs"),
    ("out", "platform/stream.rs"),
    ("errln", "platform/stream.rs"),
];

fn layer_of_module(top: &str) -> Option<usize> {
    LAYERS.iter().position(|l| l.contains(&top))
}

/// A file's layer, by its first folder or file name under src/.
fn layer_of_file(rel: &str) -> Option<usize> {
    let top = rel.split('/').next()?.trim_end_matches(".rs");
    layer_of_module(top)
}

/// The module path of a file: `experiment/run.rs` -> [experiment, run],
/// `experiment/mod.rs` -> [experiment], `lib.rs` -> [].
fn module_of(rel: &str) -> Vec<String> {
    let mut parts: Vec<String> = rel.split('/').map(|s| s.to_string()).collect();
    let last = parts.pop().unwrap_or_default();
    if last != "mod.rs" && last != "lib.rs" && last != "main.rs" {
        parts.push(last.trim_end_matches(".rs").to_string());
    }
    parts
}

/// Rust source with comments, string, raw-string and char literals blanked
/// (so paths in docs and messages are not edges).
fn strip(src: &str) -> String {
    let c: Vec<char> = src.chars().collect();
    let mut out = String::with_capacity(src.len());
    let peek = |j: usize| c.get(j).copied().unwrap_or('\0');
    let mut i = 0;
    while i < c.len() {
        if c[i] == '/' && peek(i + 1) == '/' {
            while i < c.len() && c[i] != '\n' {
                i += 1;
            }
        } else if c[i] == '/' && peek(i + 1) == '*' {
            let mut depth = 0;
            while i < c.len() {
                if c[i] == '/' && peek(i + 1) == '*' {
                    depth += 1;
                    i += 2;
                } else if c[i] == '*' && peek(i + 1) == '/' {
                    depth -= 1;
                    i += 2;
                    if depth == 0 {
                        break;
                    }
                } else {
                    i += 1;
                }
            }
            out.push(' ');
        } else if c[i] == 'r'
            && (peek(i + 1) == '"'
                || (peek(i + 1) == '#' && (peek(i + 2) == '"' || peek(i + 2) == '#')))
            && (i == 0 || !(c[i - 1].is_alphanumeric() || c[i - 1] == '_'))
        {
            let mut j = i + 1;
            let mut hashes = 0;
            while j < c.len() && c[j] == '#' {
                hashes += 1;
                j += 1;
            }
            j += 1; // the opening quote
            loop {
                if j >= c.len() {
                    break;
                }
                if c[j] == '"' && (0..hashes).all(|h| c.get(j + 1 + h) == Some(&'#')) {
                    j += 1 + hashes;
                    break;
                }
                j += 1;
            }
            out.push_str("\"\"");
            i = j;
        } else if c[i] == '"' {
            i += 1;
            while i < c.len() && c[i] != '"' {
                if c[i] == '\\' {
                    i += 1;
                }
                i += 1;
            }
            i += 1;
            out.push_str("\"\"");
        } else if c[i] == '\'' && (peek(i + 1) == '\\' || peek(i + 2) == '\'') {
            // a char literal (not a lifetime)
            i += 1;
            while i < c.len() && c[i] != '\'' {
                if c[i] == '\\' {
                    i += 1;
                }
                i += 1;
            }
            i += 1;
            out.push_str("' '");
        } else {
            out.push(c[i]);
            i += 1;
        }
    }
    out
}

/// Every path that starts with `crate::`, `super::` or `self::` (grouped
/// `use` items expanded), as segments, each with the line it is on.
fn paths(code: &str) -> Vec<(Vec<String>, usize)> {
    let b: Vec<char> = code.chars().collect();
    let mut out = Vec::new();
    let ident = |ch: char| ch.is_alphanumeric() || ch == '_';
    let mut i = 0;
    while i < b.len() {
        let starts = ["crate::", "super::", "self::"]
            .iter()
            .find(|p| b[i..].iter().take(p.len()).copied().eq(p.chars()))
            .filter(|_| i == 0 || !(ident(b[i - 1]) || b[i - 1] == ':'));
        // `$crate::` is the crate too
        if let Some(p) = starts {
            let line = b[..i].iter().filter(|c| **c == '\n').count() + 1;
            let head = p.trim_end_matches("::").to_string();
            let (list, end) = path_tail(&b, i + p.len(), vec![head]);
            for l in list {
                out.push((l, line));
            }
            i = end;
        } else {
            i += 1;
        }
    }
    out
}

/// Read `a::b::{c, d::e}` from `i` on, after `prefix`; the full paths and
/// where reading stopped.
fn path_tail(b: &[char], mut i: usize, prefix: Vec<String>) -> (Vec<Vec<String>>, usize) {
    let ident = |ch: char| ch.is_alphanumeric() || ch == '_';
    let mut path = prefix;
    loop {
        while i < b.len() && b[i].is_whitespace() {
            i += 1;
        }
        if i < b.len() && b[i] == '{' {
            // a group: each item is a path of its own
            let mut all = Vec::new();
            i += 1;
            loop {
                while i < b.len() && (b[i].is_whitespace() || b[i] == ',') {
                    i += 1;
                }
                if i >= b.len() || b[i] == '}' {
                    i += 1;
                    break;
                }
                let (mut sub, end) = path_tail(b, i, path.clone());
                all.append(&mut sub);
                // skip `as name` and anything else up to the next item
                i = end;
                while i < b.len() && b[i] != ',' && b[i] != '}' {
                    i += 1;
                }
            }
            return (all, i);
        }
        let start = i;
        while i < b.len() && ident(b[i]) {
            i += 1;
        }
        if i > start {
            path.push(b[start..i].iter().collect());
        }
        if i + 1 < b.len() && b[i] == ':' && b[i + 1] == ':' {
            i += 2;
            continue;
        }
        return (vec![path], i);
    }
}

/// The file (relative to src/) a path names, given the files there: the
/// longest module prefix that is a file; a root macro maps to its module.
fn target_file(from: &str, path: &[String], files: &BTreeSet<String>) -> Option<String> {
    let mut module = match path.first().map(|s| s.as_str()) {
        Some("crate") => vec![],
        Some("self") => module_of(from),
        Some("super") => {
            let mut m = module_of(from);
            m.pop();
            m
        }
        _ => return None,
    };
    let mut rest = &path[1..];
    while rest.first().map(|s| s.as_str()) == Some("super") {
        module.pop();
        rest = &rest[1..];
    }
    if module.is_empty() {
        if let Some(first) = rest.first() {
            if let Some((_, file)) = ROOT_MACROS.iter().find(|(m, _)| m == first) {
                return Some(file.to_string());
            }
        }
    }
    let full: Vec<&String> = module.iter().chain(rest.iter()).collect();
    for n in (1..=full.len()).rev() {
        let stem = full[..n]
            .iter()
            .map(|s| s.as_str())
            .collect::<Vec<_>>()
            .join("/");
        for cand in [format!("{stem}.rs"), format!("{stem}/mod.rs")] {
            if files.contains(&cand) {
                return Some(cand);
            }
        }
    }
    None
}

/// The edges between files: (from, to) -> the first line that makes it.
fn edges(sources: &BTreeMap<String, String>) -> BTreeMap<(String, String), usize> {
    let files: BTreeSet<String> = sources.keys().cloned().collect();
    let mut out = BTreeMap::new();
    for (from, src) in sources {
        for (path, line) in paths(&strip(src)) {
            if let Some(to) = target_file(from, &path, &files) {
                if to != *from {
                    out.entry((from.clone(), to)).or_insert(line);
                }
            }
        }
    }
    out
}

/// The layering rule on a source tree (file path relative to src/ ->
/// source): every violation, one line each.
fn check(sources: &BTreeMap<String, String>, allowed: &[(&str, &str)]) -> Vec<String> {
    let edges = edges(sources);
    let is_allowed = |f: &str, t: &str| allowed.iter().any(|(a, b)| *a == f && *b == t);
    let mut bad = Vec::new();
    let mut same_layer: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for ((from, to), line) in &edges {
        let (Some(lf), Some(lt)) = (layer_of_file(from), layer_of_file(to)) else {
            continue; // the root (lib.rs, main.rs) and what it names
        };
        if is_allowed(from, to) {
            continue;
        }
        if lt > lf {
            bad.push(format!(
                "upward edge: src/{from}:{line} uses src/{to} ({} layer is above {})",
                LAYERS[lt].join("/"),
                LAYERS[lf].join("/")
            ));
        } else if lt == lf {
            same_layer.entry(from.clone()).or_default().push(to.clone());
        }
    }
    for cycle in cycles(&same_layer) {
        bad.push(format!(
            "cycle between files of one layer: {}",
            cycle.join(" -> ")
        ));
    }
    bad
}

/// The strongly connected components of more than one file (Tarjan).
fn cycles(graph: &BTreeMap<String, Vec<String>>) -> Vec<Vec<String>> {
    struct T<'a> {
        g: &'a BTreeMap<String, Vec<String>>,
        index: BTreeMap<&'a str, usize>,
        low: BTreeMap<&'a str, usize>,
        stack: Vec<&'a str>,
        on: BTreeSet<&'a str>,
        out: Vec<Vec<String>>,
    }
    fn visit<'a>(t: &mut T<'a>, v: &'a str) {
        let n = t.index.len();
        t.index.insert(v, n);
        t.low.insert(v, n);
        t.stack.push(v);
        t.on.insert(v);
        let next: Vec<&'a str> =
            t.g.get(v)
                .map(|w| w.iter().map(|s| s.as_str()).collect())
                .unwrap_or_default();
        for w in next {
            if !t.index.contains_key(w) {
                visit(t, w);
                let lw = t.low[w];
                let lv = t.low[v];
                t.low.insert(v, lv.min(lw));
            } else if t.on.contains(w) {
                let iw = t.index[w];
                let lv = t.low[v];
                t.low.insert(v, lv.min(iw));
            }
        }
        if t.low[v] == t.index[v] {
            let mut comp = Vec::new();
            while let Some(w) = t.stack.pop() {
                t.on.remove(w);
                comp.push(w.to_string());
                if w == v {
                    break;
                }
            }
            if comp.len() > 1 {
                comp.sort();
                t.out.push(comp);
            }
        }
    }
    let mut t = T {
        g: graph,
        index: BTreeMap::new(),
        low: BTreeMap::new(),
        stack: vec![],
        on: BTreeSet::new(),
        out: vec![],
    };
    for v in graph.keys() {
        if !t.index.contains_key(v.as_str()) {
            visit(&mut t, v);
        }
    }
    t.out
}

fn read_tree(dir: &Path, root: &Path, out: &mut BTreeMap<String, String>) {
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            read_tree(&p, root, out);
        } else if p.extension().is_some_and(|x| x == "rs") {
            let rel = p
                .strip_prefix(root)
                .unwrap()
                .to_string_lossy()
                .replace('\\', "/");
            out.insert(rel, std::fs::read_to_string(&p).unwrap());
        }
    }
}

#[test]
fn layers_point_down_and_files_of_a_layer_form_no_cycle() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut sources = BTreeMap::new();
    read_tree(&src, &src, &mut sources);
    assert!(sources.len() > 30, "src/ read: {} files", sources.len());
    // the checker sees the tree: known downward edges are found
    let e = edges(&sources);
    assert!(e.contains_key(&("cli/mod.rs".to_string(), "evidence/mod.rs".to_string())));
    assert!(e
        .keys()
        .any(|(f, t)| f.starts_with("evidence/") && t.starts_with("experiment/")));
    let bad = check(&sources, ALLOWED);
    assert!(
        bad.is_empty(),
        "{} violation(s):\n{}",
        bad.len(),
        bad.join("\n")
    );
}

fn tree(files: &[(&str, &str)]) -> BTreeMap<String, String> {
    files
        .iter()
        .map(|(p, s)| (p.to_string(), s.to_string()))
        .collect()
}

#[test]
fn a_planted_upward_edge_fails() {
    let clean = tree(&[
        ("lib.rs", "pub mod io; pub mod physics; pub mod cli;"),
        ("io/mod.rs", "pub fn read() {}"),
        (
            "physics/mod.rs",
            "use crate::io::read;\npub fn model() { read() }",
        ),
        (
            "cli/mod.rs",
            "use crate::{io, physics::model};\nfn main() { crate::errln!(\"x\"); }",
        ),
        ("platform/stream.rs", ""),
    ]);
    assert_eq!(check(&clean, &[]), Vec::<String>::new());
    let mut planted = clean.clone();
    planted.insert(
        "io/mod.rs".into(),
        "pub fn read() { let _ = crate::physics::model; }".into(),
    );
    let bad = check(&planted, &[]);
    assert_eq!(bad.len(), 1, "{bad:?}");
    assert!(
        bad[0].contains("src/io/mod.rs:1 uses src/physics/mod.rs"),
        "{bad:?}"
    );
    // ... and a grouped `use` reaches the checker too
    planted.insert(
        "io/mod.rs".into(),
        "use crate::{platform, cli::{self}};".into(),
    );
    assert_eq!(check(&planted, &[]).len(), 1);
    // an allowed edge is let through
    assert!(check(&planted, &[("io/mod.rs", "cli/mod.rs")]).is_empty());
}

#[test]
fn comments_and_strings_are_not_edges_but_super_paths_are() {
    let t = tree(&[
        ("io/mod.rs", "// crate::cli::x\n/* crate::cli */ fn f() { let s = \"crate::cli::y\"; let r = r#\"crate::cli\"#; let c = '\"'; }"),
        ("cli/mod.rs", ""),
        ("physics/a.rs", "use super::b::f;"),
        ("physics/b.rs", "fn g() { super::a::h(); }"),
        ("physics/mod.rs", ""),
    ]);
    let bad = check(&t, &[]);
    assert_eq!(bad.len(), 1, "{bad:?}");
    assert!(
        bad[0].contains("cycle") && bad[0].contains("physics/a.rs -> physics/b.rs"),
        "{bad:?}"
    );
}

// ---- The README's architecture section names the tree as it is ----

/// The README's `## Architecture` section: from its heading to the next
/// `## ` heading (or the end).
fn architecture_section(readme: &str) -> Option<&str> {
    let start = readme.find("\n## Architecture\n")? + 1;
    let body = &readme[start + 3..];
    let end = body.find("\n## ").map_or(readme.len(), |e| start + 3 + e);
    Some(&readme[start..end])
}

/// The cells of a Markdown table row (`| a | b |`), trimmed; `None` for a
/// line that is not a row, or is the rule under a head.
fn table_cells(line: &str) -> Option<Vec<&str>> {
    let l = line.trim();
    if !l.starts_with('|') || l.starts_with("| ---") || l.starts_with("|---") {
        return None;
    }
    Some(l.trim_matches('|').split(" | ").map(str::trim).collect())
}

/// The back-quoted spans of a text.
fn code_spans(text: &str) -> Vec<&str> {
    text.split('`').skip(1).step_by(2).collect()
}

/// Whether a back-quoted span names a module path (`setup.rs`, `cuda/`,
/// `io/picture`, `beam`, `kernel.cu`) rather than a macro, a type, a flag or a
/// file format.
fn is_module_name(span: &str) -> bool {
    let stem = span
        .trim_end_matches('/')
        .trim_end_matches(".rs")
        .trim_end_matches(".cu");
    !stem.is_empty()
        && stem.split('/').all(|part| {
            part.starts_with(|c: char| c.is_ascii_lowercase())
                && part
                    .chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
        })
}

/// Whether `name` (a span of the row of layer `dir`) is a file or folder of
/// the tree: `tree` holds every path under src/ (`io/hkl.rs`, folders with a
/// trailing `/`). A name resolves under src/ itself or anywhere below the
/// layer's folder; one without an ending may be a `.rs` file or a folder.
fn names_a_path(name: &str, dir: &str, tree: &BTreeSet<String>) -> bool {
    let bare = name.trim_end_matches('/');
    let forms: Vec<String> = if name.ends_with('/') {
        vec![format!("{bare}/")]
    } else if bare.ends_with(".rs") || bare.ends_with(".cu") {
        vec![bare.to_string()]
    } else {
        vec![format!("{bare}.rs"), format!("{bare}/")]
    };
    forms.iter().any(|f| {
        tree.contains(f)
            || tree
                .iter()
                .any(|p| p.starts_with(dir) && p.ends_with(&format!("/{f}")))
    })
}

/// What the architecture section gets wrong about the tree: a layer path or a
/// module it names that does not exist, and a top-level module of src/ (a
/// folder or a file other than lib.rs and main.rs) that no layer row names.
fn readme_problems(section: &str, tree: &BTreeSet<String>) -> Vec<String> {
    let mut bad = Vec::new();
    let mut named_tops = BTreeSet::new();
    let mut rows = 0;
    for line in section.lines() {
        let Some(cells) = table_cells(line) else {
            continue;
        };
        // A layer row: | layer | `src/<top>/` | what lives there |
        let Some(path) = cells
            .get(1)
            .and_then(|c| code_spans(c).first().copied())
            .and_then(|p| p.strip_prefix("src/"))
        else {
            continue;
        };
        rows += 1;
        if !tree.contains(path) {
            bad.push(format!("README names src/{path}, which does not exist"));
        }
        named_tops.insert(path.to_string());
        let dir = path.trim_end_matches(".rs").trim_end_matches('/');
        for span in cells.iter().skip(2).flat_map(|c| code_spans(c)) {
            if is_module_name(span) && !names_a_path(span, &format!("{dir}/"), tree) {
                bad.push(format!(
                    "README's row for src/{path} names `{span}`, which is not under src/{dir}/ or src/"
                ));
            }
        }
    }
    if rows == 0 {
        bad.push("README's architecture section has no layer rows".to_string());
    }
    for top in tree.iter().filter(|p| {
        let rest = p.trim_end_matches('/');
        !rest.contains('/') && *p != "lib.rs" && *p != "main.rs"
    }) {
        if !named_tops.contains(top) {
            bad.push(format!("src/{top} is named by no layer row of the README"));
        }
    }
    bad
}

/// Every file and folder under `dir`, relative to `root` (folders with a
/// trailing `/`).
fn list_tree(dir: &Path, root: &Path, out: &mut BTreeSet<String>) {
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        let rel = p
            .strip_prefix(root)
            .unwrap()
            .to_string_lossy()
            .replace('\\', "/");
        if p.is_dir() {
            out.insert(format!("{rel}/"));
            list_tree(&p, root, out);
        } else {
            out.insert(rel);
        }
    }
}

#[test]
fn readme_architecture_names_the_tree_as_it_is() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let readme = std::fs::read_to_string(root.join("README.md")).unwrap();
    let section = architecture_section(&readme).expect("README has ## Architecture");
    let src = root.join("src");
    let mut tree = BTreeSet::new();
    list_tree(&src, &src, &mut tree);
    let bad = readme_problems(section, &tree);
    assert!(bad.is_empty(), "{}", bad.join("\n"));
    // The other folders it names exist too.
    let mut others = 0;
    for line in section
        .lines()
        .skip_while(|l| !l.starts_with("Other folders"))
    {
        if let Some(cells) = table_cells(line) {
            for span in code_spans(cells[0]) {
                others += 1;
                assert!(root.join(span).exists(), "README names {span}");
            }
        }
    }
    assert!(others >= 4, "{others} other folders read");
}

#[test]
fn readme_check_catches_a_missing_module_and_an_unnamed_folder() {
    let tree: BTreeSet<String> = [
        "io/",
        "io/mod.rs",
        "io/hkl.rs",
        "io/picture/",
        "io/picture/map.rs",
        "cli/",
        "cli/mod.rs",
        "extra/",
        "extra/mod.rs",
        "lib.rs",
        "main.rs",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let section = "## Architecture\n\n| layer | path | what |\n| --- | --- | --- |\n\
        | io | `src/io/` | `hkl`, `map`, `io/picture`, `.npy`, `Params`, `outln!` |\n\
        | cli | `src/cli/` | `mod.rs`, `gone.rs`, `old/` |\n\
        | physics | `src/physics/` | x |\n";
    let bad = readme_problems(section, &tree);
    assert_eq!(bad.len(), 4, "{bad:#?}");
    assert!(bad[0].contains("`gone.rs`"), "{bad:#?}");
    assert!(bad[1].contains("`old/`"), "{bad:#?}");
    assert!(
        bad[2].contains("src/physics/, which does not exist"),
        "{bad:#?}"
    );
    assert!(
        bad[3].contains("src/extra/ is named by no layer row"),
        "{bad:#?}"
    );
    // and the section of a README is found, up to the next heading
    let readme = "# x\n\n## Speed\n\nfast\n\n## Architecture\n\nlayers\n\n## Next\n\nmore\n";
    assert_eq!(
        architecture_section(readme),
        Some("## Architecture\n\nlayers\n")
    );
}
