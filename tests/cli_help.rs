//! Every flag and argument of every `runner` subcommand has help text: the
//! clap command is walked argument by argument (built from the same
//! definition the binary parses with), and the built binary's `--help` of
//! each subcommand names every flag.

#[macro_use]
mod common;
use common::*;

/// (subcommand path, argument id) of every argument without help text.
fn missing_help(cmd: &clap::Command, path: &str, out: &mut Vec<String>) {
    for a in cmd.get_arguments() {
        let id = a.get_id().as_str();
        if id == "help" || id == "version" {
            continue; // clap's own, with its own text
        }
        let text = a
            .get_help()
            .or(a.get_long_help())
            .map(|h| h.to_string())
            .unwrap_or_default();
        if text.trim().is_empty() {
            out.push(format!("{path} {id}"));
        }
    }
    for sub in cmd.get_subcommands() {
        if sub.get_name() == "help" {
            continue;
        }
        let about = sub.get_about().map(|h| h.to_string()).unwrap_or_default();
        if about.trim().is_empty() {
            out.push(format!("{path} {} (the subcommand)", sub.get_name()));
        }
        missing_help(sub, &format!("{path} {}", sub.get_name()), out);
    }
}

#[test]
fn every_argument_of_every_subcommand_has_help() {
    let cmd = braggrun::cli::command();
    let mut missing = Vec::new();
    missing_help(&cmd, "runner", &mut missing);
    assert!(
        missing.is_empty(),
        "arguments without help text: {missing:#?}"
    );
    // The walk sees the arguments the issue named.
    let sub = |n: &str| cmd.find_subcommand(n).unwrap().clone();
    for (s, id) in [
        ("run", "sets"),
        ("plan", "sets"),
        ("plan", "only"),
        ("plan", "allow_large"),
        ("compare", "atol"),
        ("compare", "all"),
    ] {
        assert!(
            sub(s).get_arguments().any(|a| a.get_id() == id),
            "{s} has {id}"
        );
    }
}

#[test]
fn every_subcommand_help_names_its_flags() {
    let cmd = braggrun::cli::command();
    for sub in cmd.get_subcommands() {
        let name = sub.get_name();
        if name == "help" || name == "nanobragg" {
            continue; // nanobragg passes -h/--help to nanoBragg's own usage
        }
        let mut c = runner();
        c.args([name, "--help"]);
        let (code, stdout, stderr) = run_cmd(c);
        assert_eq!(code, 0, "runner {name} --help: {stderr}");
        for a in sub.get_arguments() {
            if let Some(long) = a.get_long() {
                assert!(
                    stdout.contains(&format!("--{long}")),
                    "runner {name} --help names --{long}:\n{stdout}"
                );
            }
            // The start of its help text is printed (the first word may
            // begin a wrapped line, so only one word is checked).
            if let Some(h) = a.get_help() {
                let h = h.to_string();
                let first = h.split_whitespace().next().unwrap_or("");
                assert!(
                    stdout.contains(first),
                    "runner {name} --help shows the help of {}:\n{stdout}",
                    a.get_id()
                );
            }
        }
    }
}
