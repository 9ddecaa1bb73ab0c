//! `cargo xtask mutants`: checks that the tests catch the breakages they are meant to catch.
//!
//! A *mutation* is a small deliberate change to the library (drop a wake-up, skip a re-check,
//! turn a compare-exchange into a load and a store) together with the test that promises to
//! notice it. The list lives in `xtask/mutations/*.txt`, one file per area, in this format:
//!
//! ```text
//! === read-only-read-at-skips-seq-recheck
//! why: a read-only read_at must retry when a writer ran during its copy
//! file: crates/mmf/src/segment.rs
//! test: -p mmf --test multiprocess hammer_two_writers_four_readers_never_tear_a_record
//! env: KEY=VALUE            (optional, repeatable; e.g. RUSTFLAGS=--cfg loom)
//! platform: linux           (optional: linux, windows or any; default any)
//! --- find
//! <lines that occur exactly once in the file>
//! --- replace
//! <their replacement, possibly nothing>
//! --- end
//! ```
//!
//! Lines before the first `=== ` (comments starting with `#`) are notes: mutations that were
//! tried and are equivalent to the original, with the reason.
//!
//! The runner copies the workspace (tracked and new files, as they are now) into
//! `target/mutants/tree`, and first runs every test command once there without any mutation:
//! a test that already fails would "catch" everything and prove nothing. Then, for each
//! mutation in turn, it applies the change, builds the test (a mutation that does not compile
//! is reported as *unviable*, not as caught), runs it `--runs` times (3 by default) and puts
//! the file back. A mutation is *caught* when every run fails; a run that exceeds its time limit
//! counts as failed (the test did not pass) and is reported as a timeout. Every run's output is
//! kept under `target/mutants/logs/`, and the table of results in `target/mutants/report.md`.
//! The command fails unless every mutation was caught in every run.
//!
//! Not a step of `cargo xtask test`: with the tests it runs three times each, the whole list
//! takes tens of minutes on two cores.
//!
//! # `--cargo-mutants [ARGS..]`
//!
//! Runs [cargo-mutants](https://mutants.rs) instead, over the modules whose promises the
//! curated list covers ([`CARGO_MUTANTS_FILES`]), with mmf's whole test suite, passing `ARGS`
//! on (`--shard 3/20`, `--list`, `-F regex`, ...); its results land in
//! `target/mutants/mutants.out`. It generates about a thousand mutants for those modules, and
//! each needs a build and a suite run (half a minute at least on two cores), so a full run
//! takes the better part of a day there: run it by shards, or with `-F` on the functions you
//! changed, and add a curated mutation for each survivor worth keeping.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use crate::{duration, read, Result};

/// Where the mutation lists live, from the workspace root.
const MUTATIONS_DIR: &str = "xtask/mutations";
/// Longest a single test run may take before it is killed and counted as a failure.
const RUN_LIMIT: Duration = Duration::from_secs(600);

/// The modules `--cargo-mutants` mutates.
pub const CARGO_MUTANTS_FILES: &[&str] = &[
    "crates/mmf/src/lock/layout.rs",
    "crates/mmf/src/lock/protocol.rs",
    "crates/mmf/src/lock/slots.rs",
    "crates/mmf/src/channel/common.rs",
    "crates/mmf/src/channel/layout.rs",
    "crates/mmf/src/channel/reader.rs",
    "crates/mmf/src/channel/writer.rs",
    "crates/mmf/src/segment.rs",
    "crates/mmf/src/sys/fault.rs",
];

pub const USAGE: &str = "\
       cargo xtask mutants [--runs N] [--only NAME[,NAME..]] [--list]
       cargo xtask mutants --cargo-mutants [CARGO-MUTANTS ARGS..]

  mutants  apply each mutation of xtask/mutations/*.txt to a copy of the workspace and run
           its test N times (default 3); fails unless every run of every mutation fails;
           with --cargo-mutants, run cargo-mutants over the lock, channel, segment and fault
           modules instead (about a thousand mutants: shard it)";

/// One entry of a mutation list.
#[derive(Debug, Clone)]
pub struct Mutation {
    pub name: String,
    pub why: String,
    pub file: String,
    pub test: Vec<String>,
    pub env: Vec<(String, String)>,
    pub platform: String,
    pub find: String,
    pub replace: String,
    /// `path:line` of the `=== ` line, for messages.
    pub origin: String,
}

impl Mutation {
    fn applies_here(&self) -> bool {
        match self.platform.as_str() {
            "any" => true,
            "linux" => cfg!(target_os = "linux"),
            "windows" => cfg!(windows),
            _ => false,
        }
    }

    /// The test command as one line, for grouping and for messages.
    fn command_line(&self) -> String {
        let env: Vec<String> = self.env.iter().map(|(k, v)| format!("{k}={v:?}")).collect();
        let mut words = env;
        words.push("cargo test".into());
        words.extend(self.test.iter().cloned());
        words.join(" ")
    }
}

/// Parses one mutation file.
pub fn parse(path: &Path, text: &str) -> Result<Vec<Mutation>> {
    let mut mutations = Vec::new();
    let mut lines = text.lines().enumerate().peekable();
    // Skip the notes before the first entry.
    while let Some((_, line)) = lines.peek() {
        if line.starts_with("=== ") {
            break;
        }
        lines.next();
    }
    while let Some((index, line)) = lines.next() {
        let origin = format!("{}:{}", path.display(), index + 1);
        let name = line
            .strip_prefix("=== ")
            .map(str::trim)
            .filter(|name| !name.is_empty())
            .ok_or_else(|| format!("{origin}: expected `=== name`, found {line:?}"))?
            .to_owned();
        let mut fields: BTreeMap<&str, String> = BTreeMap::new();
        let mut env = Vec::new();
        // Header fields, up to `--- find`.
        loop {
            let (index, line) = lines
                .next()
                .ok_or_else(|| format!("{origin}: `{name}` ends before `--- find`"))?;
            if line == "--- find" {
                break;
            }
            if line.trim().is_empty() || line.starts_with('#') {
                continue;
            }
            let (key, value) = line.split_once(':').ok_or_else(|| {
                format!(
                    "{}:{}: expected `key: value`, found {line:?}",
                    path.display(),
                    index + 1
                )
            })?;
            let value = value.trim().to_owned();
            match key {
                "env" => {
                    let (k, v) = value.split_once('=').ok_or_else(|| {
                        format!("{}:{}: env needs KEY=VALUE", path.display(), index + 1)
                    })?;
                    env.push((k.to_owned(), v.to_owned()));
                }
                "why" | "file" | "test" | "platform" => {
                    if fields.insert(key, value).is_some() {
                        return Err(format!("{origin}: `{name}` has two `{key}:` lines"));
                    }
                }
                other => return Err(format!("{origin}: `{name}`: unknown field `{other}`")),
            }
        }
        let block = |lines: &mut dyn Iterator<Item = (usize, &str)>, end: &str| {
            let mut text = String::new();
            for (_, line) in lines {
                if line == end {
                    return Ok(text);
                }
                text.push_str(line);
                text.push('\n');
            }
            Err(format!("{origin}: `{name}` has no `{end}` line"))
        };
        let find = block(&mut lines, "--- replace")?;
        let replace = block(&mut lines, "--- end")?;
        let mut take = |key: &str| {
            fields
                .remove(key)
                .ok_or_else(|| format!("{origin}: `{name}` has no `{key}:` line"))
        };
        let why = take("why")?;
        let file = take("file")?;
        let test: Vec<String> = take("test")?
            .split_whitespace()
            .map(str::to_owned)
            .collect();
        let platform = fields.remove("platform").unwrap_or_else(|| "any".into());
        if !["any", "linux", "windows"].contains(&platform.as_str()) {
            return Err(format!("{origin}: `{name}`: unknown platform `{platform}`"));
        }
        if find.trim().is_empty() {
            return Err(format!("{origin}: `{name}` has an empty find text"));
        }
        if find == replace {
            return Err(format!("{origin}: `{name}` replaces its text with itself"));
        }
        mutations.push(Mutation {
            name,
            why,
            file,
            test,
            env,
            platform,
            find,
            replace,
            origin,
        });
        // Blank lines between entries.
        while let Some((_, line)) = lines.peek() {
            if line.starts_with("=== ") {
                break;
            }
            if !line.trim().is_empty() {
                let (index, line) = lines.next().expect("peeked");
                return Err(format!(
                    "{}:{}: text after `--- end` that is not a new `=== ` entry: {line:?}",
                    path.display(),
                    index + 1
                ));
            }
            lines.next();
        }
    }
    Ok(mutations)
}

/// Every mutation of every list, checked for unique names.
pub fn load(root: &Path) -> Result<Vec<Mutation>> {
    let dir = root.join(MUTATIONS_DIR);
    let mut paths: Vec<PathBuf> = fs::read_dir(&dir)
        .map_err(|e| format!("cannot list {}: {e}", dir.display()))?
        .filter_map(|entry| entry.ok().map(|e| e.path()))
        .filter(|path| path.extension().is_some_and(|ext| ext == "txt"))
        .collect();
    paths.sort();
    let mut all: Vec<Mutation> = Vec::new();
    for path in paths {
        let text = fs::read_to_string(&path)
            .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
        let relative = path.strip_prefix(root).unwrap_or(&path).to_path_buf();
        for mutation in parse(&relative, &text)? {
            if let Some(other) = all.iter().find(|m| m.name == mutation.name) {
                return Err(format!(
                    "mutation `{}` is defined twice: {} and {}",
                    mutation.name, other.origin, mutation.origin
                ));
            }
            all.push(mutation);
        }
    }
    Ok(all)
}

/// Checks that each mutation's find text occurs exactly once in its file as it is now, so a
/// list cannot go stale unnoticed (run by `cargo xtask test`).
pub fn check_current(root: &Path, mutations: &[Mutation]) -> Result {
    let mut problems = Vec::new();
    for m in mutations {
        match fs::read_to_string(root.join(&m.file)) {
            Ok(text) => match text.matches(&m.find).count() {
                1 => {}
                n => problems.push(format!(
                    "{} `{}`: its find text occurs {n} times in {} (must be once)",
                    m.origin, m.name, m.file
                )),
            },
            Err(e) => problems.push(format!("{} `{}`: {}: {e}", m.origin, m.name, m.file)),
        }
    }
    if problems.is_empty() {
        Ok(())
    } else {
        Err(problems.join("\n"))
    }
}

struct Options {
    runs: u32,
    only: Vec<String>,
    list: bool,
}

fn parse_args(args: &[String]) -> Result<Options> {
    let mut options = Options {
        runs: 3,
        only: Vec::new(),
        list: false,
    };
    let mut args = args.iter();
    while let Some(flag) = args.next() {
        match flag.as_str() {
            "--list" => options.list = true,
            "--runs" | "--only" => {
                let value = args
                    .next()
                    .ok_or_else(|| format!("`{flag}` needs a value"))?;
                if flag == "--runs" {
                    options.runs =
                        value.parse().ok().filter(|&n| n > 0).ok_or_else(|| {
                            format!("--runs needs a positive number, not {value:?}")
                        })?;
                } else {
                    options.only.extend(value.split(',').map(str::to_owned));
                }
            }
            other => return Err(format!("unknown argument `{other}`\n\nusage:{USAGE}")),
        }
    }
    Ok(options)
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Verdict {
    Caught,
    Survived,
    Unviable,
}

struct Outcome {
    name: String,
    why: String,
    command: String,
    verdict: Verdict,
    /// One entry per run: "fail 3.1s", "PASS 2.0s", "timeout".
    runs: Vec<String>,
}

pub fn main(root: &Path, args: &[String]) -> Result {
    if args.first().is_some_and(|a| a == "--cargo-mutants") {
        return cargo_mutants(root, &args[1..]);
    }
    let options = parse_args(args)?;
    let mut mutations = load(root)?;
    check_current(root, &mutations)?;
    if !options.only.is_empty() {
        for name in &options.only {
            if !mutations.iter().any(|m| &m.name == name) {
                return Err(format!("no mutation named `{name}`"));
            }
        }
        mutations.retain(|m| options.only.contains(&m.name));
    }
    let (here, elsewhere): (Vec<Mutation>, Vec<Mutation>) =
        mutations.into_iter().partition(Mutation::applies_here);
    if options.list {
        for m in here.iter().chain(&elsewhere) {
            println!("{:<48} {:<8} {}", m.name, m.platform, m.command_line());
            println!("{:<48} {}", "", m.why);
        }
        println!(
            "{} mutations ({} run here)",
            here.len() + elsewhere.len(),
            here.len()
        );
        return Ok(());
    }
    for m in &elsewhere {
        println!("skipped here (platform {}): {}", m.platform, m.name);
    }

    let work = root.join("target").join("mutants");
    let tree = work.join("tree");
    let logs = work.join("logs");
    fs::create_dir_all(&logs).map_err(|e| format!("cannot create {}: {e}", logs.display()))?;
    sync_tree(root, &tree)?;

    // Every test command must pass on the unmutated tree first.
    let mut commands: Vec<&Mutation> = Vec::new();
    for m in &here {
        if !commands
            .iter()
            .any(|c| c.command_line() == m.command_line())
        {
            commands.push(m);
        }
    }
    println!(
        "\n==> baseline: {} test commands on the unmutated tree",
        commands.len()
    );
    for (index, m) in commands.iter().enumerate() {
        let log = logs.join(format!("baseline-{index}.log"));
        let started = Instant::now();
        let status = run_logged(&tree, m, &log, false)?;
        println!(
            "  {} in {}: {}",
            if status == RunStatus::Passed {
                "ok"
            } else {
                "FAILED"
            },
            duration(started.elapsed()),
            m.command_line()
        );
        if status != RunStatus::Passed {
            return Err(format!(
                "`{}` does not pass without a mutation (log: {}); fix that first",
                m.command_line(),
                log.display()
            ));
        }
    }

    let started = Instant::now();
    let mut outcomes = Vec::new();
    for (index, m) in here.iter().enumerate() {
        println!(
            "\n==> [{}/{}] {} ({})",
            index + 1,
            here.len(),
            m.name,
            m.file
        );
        let outcome = try_mutation(&tree, &logs, m, options.runs);
        println!(
            "<== {}: {} [{}]",
            m.name,
            match outcome.verdict {
                Verdict::Caught => "caught",
                Verdict::Survived => "SURVIVED",
                Verdict::Unviable => "UNVIABLE",
            },
            outcome.runs.join(", ")
        );
        outcomes.push(outcome);
    }

    let report = report(&outcomes, options.runs, started.elapsed());
    let report_path = work.join("report.md");
    fs::write(&report_path, &report)
        .map_err(|e| format!("cannot write {}: {e}", report_path.display()))?;
    println!("\n{report}\n(also in {})", report_path.display());
    let bad: Vec<&str> = outcomes
        .iter()
        .filter(|o| o.verdict != Verdict::Caught)
        .map(|o| o.name.as_str())
        .collect();
    if bad.is_empty() {
        Ok(())
    } else {
        Err(format!(
            "{} of {} mutations were not caught in every run: {}",
            bad.len(),
            outcomes.len(),
            bad.join(", ")
        ))
    }
}

/// `cargo mutants` over [`CARGO_MUTANTS_FILES`] with mmf's tests, installing it if missing.
fn cargo_mutants(root: &Path, extra: &[String]) -> Result {
    crate::setup::cargo_subcommand(root, "mutants")?;
    let mut cmd = Command::new("cargo");
    cmd.current_dir(root)
        .args(["mutants", "--package", "mmf", "--test-package", "mmf"])
        .arg("--output")
        .arg(root.join("target").join("mutants"));
    for file in CARGO_MUTANTS_FILES {
        cmd.args(["--file", file]);
    }
    crate::run(cmd.args(extra))
}

/// Applies `m` in `tree`, builds, runs the test `runs` times, and restores the file (also when
/// a step fails, so the tree stays clean for the next mutation).
fn try_mutation(tree: &Path, logs: &Path, m: &Mutation, runs: u32) -> Outcome {
    let mut outcome = Outcome {
        name: m.name.clone(),
        why: m.why.clone(),
        command: m.command_line(),
        verdict: Verdict::Unviable,
        runs: Vec::new(),
    };
    let path = tree.join(&m.file);
    let original = match fs::read_to_string(&path) {
        Ok(text) => text,
        Err(e) => {
            outcome.runs.push(format!("cannot read {}: {e}", m.file));
            return outcome;
        }
    };
    if original.matches(&m.find).count() != 1 {
        outcome.runs.push("find text not found once".into());
        return outcome;
    }
    let mutated = original.replacen(&m.find, &m.replace, 1);
    if let Err(e) = fs::write(&path, mutated) {
        outcome.runs.push(format!("cannot write {}: {e}", m.file));
        return outcome;
    }
    let build_log = logs.join(format!("{}-build.log", m.name));
    match run_logged(tree, m, &build_log, true) {
        Ok(RunStatus::Passed) => {
            let mut caught = 0;
            for run in 1..=runs {
                let log = logs.join(format!("{}-{run}.log", m.name));
                let started = Instant::now();
                let took = || duration(started.elapsed());
                match run_logged(tree, m, &log, false) {
                    Ok(RunStatus::Passed) => outcome.runs.push(format!("PASS {}", took())),
                    Ok(RunStatus::Failed) => {
                        caught += 1;
                        outcome.runs.push(format!("fail {}", took()));
                    }
                    Ok(RunStatus::TimedOut) => {
                        caught += 1;
                        outcome.runs.push(format!("timeout {}", took()));
                    }
                    Err(e) => outcome.runs.push(e),
                }
            }
            outcome.verdict = if caught == runs {
                Verdict::Caught
            } else {
                Verdict::Survived
            };
        }
        Ok(_) => outcome
            .runs
            .push(format!("does not build (log: {})", build_log.display())),
        Err(e) => outcome.runs.push(e),
    }
    if let Err(e) = fs::write(&path, original) {
        // The tree is now wrong for every later mutation: stop rather than report nonsense.
        panic!("cannot restore {}: {e}", path.display());
    }
    outcome
}

#[derive(PartialEq, Eq)]
enum RunStatus {
    Passed,
    Failed,
    TimedOut,
}

/// Runs `cargo test <m.test>` (with `--no-run` to build only) in `tree`, output to `log`.
fn run_logged(tree: &Path, m: &Mutation, log: &Path, build_only: bool) -> Result<RunStatus> {
    let file =
        fs::File::create(log).map_err(|e| format!("cannot create {}: {e}", log.display()))?;
    let err = file
        .try_clone()
        .map_err(|e| format!("cannot share {}: {e}", log.display()))?;
    let mut cmd = Command::new("cargo");
    cmd.current_dir(tree).arg("test");
    // `--no-run` goes before any `--`, which separates cargo's arguments from the harness's.
    let split = m
        .test
        .iter()
        .position(|a| a == "--")
        .unwrap_or(m.test.len());
    cmd.args(&m.test[..split]);
    if build_only {
        cmd.arg("--no-run");
    } else {
        cmd.args(&m.test[split..]);
    }
    // Each distinct environment (RUSTFLAGS above all) gets its own target directory, so that
    // switching between them does not rebuild everything.
    let mut target = String::from("target");
    for (key, value) in &m.env {
        cmd.env(key, value);
        target.push('-');
        target.extend(format!("{key}-{value}").chars().map(|c| {
            if c.is_ascii_alphanumeric() {
                c
            } else {
                '_'
            }
        }));
    }
    cmd.env("CARGO_TARGET_DIR", tree.join(target))
        .stdin(Stdio::null())
        .stdout(file)
        .stderr(err);
    let mut child = cmd
        .spawn()
        .map_err(|e| format!("cannot start cargo: {e}"))?;
    let started = Instant::now();
    loop {
        match child.try_wait() {
            Ok(Some(status)) if status.success() => return Ok(RunStatus::Passed),
            Ok(Some(_)) => return Ok(RunStatus::Failed),
            Ok(None) if started.elapsed() > RUN_LIMIT => {
                // cargo's children (the test binary and its own children) outlive it; the
                // test's processes are killed by their own parents' Drop or time out.
                let _ = child.kill();
                let _ = child.wait();
                return Ok(RunStatus::TimedOut);
            }
            Ok(None) => thread::sleep(Duration::from_millis(100)),
            Err(e) => return Err(format!("waiting for cargo: {e}")),
        }
    }
}

/// Makes `tree` a copy of the workspace's tracked and new (not ignored) files, rewriting only
/// the files whose content differs, so that cargo's incremental builds there stay valid, and
/// deleting the files the workspace no longer has (a `lock.rs` left beside a new `lock/mod.rs`
/// would not compile).
fn sync_tree(root: &Path, tree: &Path) -> Result {
    let listing = read(Command::new("git").current_dir(root).args([
        "ls-files",
        "--cached",
        "--others",
        "--exclude-standard",
    ]))?;
    let mut copied = 0;
    for relative in listing.lines().filter(|l| !l.is_empty()) {
        let from = root.join(relative);
        let Ok(content) = fs::read(&from) else {
            continue; // deleted in the work tree but still in the index
        };
        let to = tree.join(relative);
        if fs::read(&to).is_ok_and(|existing| existing == content) {
            continue;
        }
        if let Some(parent) = to.parent() {
            fs::create_dir_all(parent)
                .map_err(|e| format!("cannot create {}: {e}", parent.display()))?;
        }
        fs::write(&to, content).map_err(|e| format!("cannot write {}: {e}", to.display()))?;
        copied += 1;
    }
    let listed: std::collections::HashSet<PathBuf> = listing
        .lines()
        .filter(|l| !l.is_empty())
        .map(|l| tree.join(l))
        .collect();
    let removed = remove_unlisted(tree, &listed)?;
    println!(
        "{} synced into {} ({copied} files changed, {removed} removed)",
        root.display(),
        tree.display()
    );
    Ok(())
}

/// Deletes the files under `dir` that are not in `listed`, leaving build output (`target`)
/// alone; returns how many it deleted.
fn remove_unlisted(dir: &Path, listed: &std::collections::HashSet<PathBuf>) -> Result<usize> {
    let mut removed = 0;
    let entries = fs::read_dir(dir).map_err(|e| format!("cannot list {}: {e}", dir.display()))?;
    for entry in entries {
        let path = entry
            .map_err(|e| format!("cannot list {}: {e}", dir.display()))?
            .path();
        if path.is_dir() {
            if path.file_name().is_some_and(|n| n == "target") {
                continue;
            }
            removed += remove_unlisted(&path, listed)?;
        } else if !listed.contains(&path) {
            fs::remove_file(&path).map_err(|e| format!("cannot remove {}: {e}", path.display()))?;
            removed += 1;
        }
    }
    Ok(removed)
}

fn report(outcomes: &[Outcome], runs: u32, took: Duration) -> String {
    let caught = outcomes
        .iter()
        .filter(|o| o.verdict == Verdict::Caught)
        .count();
    let mut out = String::new();
    let _ = writeln!(
        out,
        "# Mutants: {caught} of {} caught in {runs} of {runs} runs ({})\n",
        outcomes.len(),
        duration(took)
    );
    let _ = writeln!(out, "| mutation | verdict | runs | test | what it breaks |");
    let _ = writeln!(out, "|---|---|---|---|---|");
    for o in outcomes {
        let verdict = match o.verdict {
            Verdict::Caught => "caught",
            Verdict::Survived => "**survived**",
            Verdict::Unviable => "**unviable**",
        };
        let _ = writeln!(
            out,
            "| `{}` | {verdict} | {} | `{}` | {} |",
            o.name,
            o.runs.join(", "),
            o.command,
            o.why
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const SAMPLE: &str = "\
# equivalent: nothing
=== first
why: because
file: crates/mmf/src/lock.rs
test: -p mmf --lib lock::tests
--- find
    a();
    b();
--- replace
    b();
--- end

=== second
why: loom
file: crates/mmf/src/lock.rs
test: -p mmf --lib --release loom_x
env: RUSTFLAGS=--cfg loom
platform: linux
--- find
x
--- replace
--- end
";

    #[test]
    fn parses_entries_with_optional_fields() {
        let all = parse(Path::new("sample.txt"), SAMPLE).unwrap();
        assert_eq!(all.len(), 2);
        assert_eq!(all[0].name, "first");
        assert_eq!(all[0].find, "    a();\n    b();\n");
        assert_eq!(all[0].replace, "    b();\n");
        assert_eq!(all[0].test, ["-p", "mmf", "--lib", "lock::tests"]);
        assert_eq!(all[0].platform, "any");
        assert_eq!(all[1].replace, "");
        assert_eq!(
            all[1].env,
            [("RUSTFLAGS".to_owned(), "--cfg loom".to_owned())]
        );
        assert_eq!(all[1].platform, "linux");
        assert_eq!(
            all[1].command_line(),
            "RUSTFLAGS=\"--cfg loom\" cargo test -p mmf --lib --release loom_x"
        );
    }

    #[test]
    fn rejects_malformed_entries() {
        let missing_test = SAMPLE.replace("test: -p mmf --lib lock::tests\n", "");
        assert!(parse(Path::new("s"), &missing_test)
            .unwrap_err()
            .contains("no `test:`"));
        let unterminated = "=== a\nwhy: w\nfile: f\ntest: t\n--- find\nx\n--- replace\n";
        assert!(parse(Path::new("s"), unterminated)
            .unwrap_err()
            .contains("--- end"));
        let same = "=== a\nwhy: w\nfile: f\ntest: t\n--- find\nx\n--- replace\nx\n--- end\n";
        assert!(parse(Path::new("s"), same).unwrap_err().contains("itself"));
        let unknown = SAMPLE.replace("platform: linux", "platform: mac");
        assert!(parse(Path::new("s"), &unknown)
            .unwrap_err()
            .contains("unknown platform"));
    }
}
