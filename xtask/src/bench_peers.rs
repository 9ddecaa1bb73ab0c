//! `cargo xtask bench-peers`: mmf against the mechanisms people would use instead, two real
//! processes each (`crates/mmf/benches/peers`, its own workspace so that iceoryx2's and
//! plotters' dependency trees stay out of the library's builds).
//!
//! Builds the benchmark in release mode, runs it (3 runs by default; arguments after
//! `bench-peers` go to it, e.g. `--runs 5`, `--only mmf-frames,shm-raw-sync`,
//! `--sizes 64,8192`, `--cpus 2,3`), and leaves `results.jsonl` (one JSON object per
//! mechanism, size and run), `peers.md` (the table) and `peers.svg` (the chart) in
//! `target/bench-peers/`. `--update-docs` also copies the table and the chart to `docs/`,
//! where the README shows them.

use std::path::Path;

use crate::{cargo, run, Result};

/// The benchmark's own workspace.
pub const PEERS_DIR: &str = "crates/mmf/benches/peers";
const OUT_DIR: &str = "target/bench-peers";

pub fn main(root: &Path, args: &[String]) -> Result {
    let update_docs = args.iter().any(|a| a == "--update-docs");
    let passed: Vec<&String> = args.iter().filter(|a| *a != "--update-docs").collect();
    let manifest = root.join(PEERS_DIR).join("Cargo.toml");
    // The benchmark's build shares the workspace's target folder, in a directory of its own.
    let target_dir = root.join("target/peers");
    run(cargo(root)
        .args(["build", "--release", "--manifest-path"])
        .arg(&manifest)
        .arg("--target-dir")
        .arg(&target_dir))?;
    run(
        std::process::Command::new(target_dir.join("release/mmf-bench-peers"))
            .current_dir(root)
            .args(["--out", OUT_DIR])
            .args(passed),
    )?;
    if update_docs {
        for file in ["peers.svg", "peers.md"] {
            let from = root.join(OUT_DIR).join(file);
            let to = root.join("docs").join(file);
            std::fs::copy(&from, &to)
                .map_err(|e| format!("copy {} to {}: {e}", from.display(), to.display()))?;
            println!("updated {}", to.display());
        }
    }
    Ok(())
}

/// The `peers` step of `cargo xtask test`: the benchmark is not run there, but it must keep
/// compiling, formatted and lint-clean against the library it measures.
pub fn check(root: &Path) -> Result {
    let manifest = root.join(PEERS_DIR).join("Cargo.toml");
    run(cargo(root)
        .args(["fmt", "--check", "--manifest-path"])
        .arg(&manifest))?;
    run(cargo(root)
        .args(["clippy", "--all-targets", "--manifest-path"])
        .arg(&manifest)
        .arg("--target-dir")
        .arg(root.join("target/peers"))
        .args([
            "--",
            "-D",
            "warnings",
            "-D",
            "clippy::undocumented_unsafe_blocks",
        ]))
}
