//! The `csharp` step: the C# binding (`bindings/csharp/Mmf.cs`) against real Rust processes.
//!
//! Builds the C ABI's cdylib and the camera demo, compiles the binding and its test program
//! (`bindings/csharp/tests/FramesTest.cs`) with mono's `mcs`, warnings as errors, and runs it
//! with `mono`, the cdylib found through `LD_LIBRARY_PATH`. The program checks what it prints
//! and exits non-zero on any failure. There is no skipping when mono is missing: `cargo xtask
//! setup` installs it, so a missing mono is a machine that was not set up, and says so.

use std::env;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use crate::{cargo, read, run, Result};

/// The binding and the test program, compiled together into one assembly.
const SOURCES: &[&str] = &[
    "bindings/csharp/Mmf.cs",
    "bindings/csharp/tests/FramesTest.cs",
];

pub fn check(root: &Path) -> Result {
    for tool in ["mcs", "mono"] {
        let found = Command::new(tool)
            .arg("--version")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|status| status.success());
        if !found {
            return Err(format!(
                "`{tool}` is not installed: run `cargo xtask setup` (it installs the Debian packages mono-mcs and mono-runtime)"
            ));
        }
    }
    run(cargo(root).args(["build", "-p", "mmf-ffi"]))?;
    run(cargo(root).args(["build", "--example", "camera", "-p", "mmf"]))?;

    let target = target_dir(root)?;
    let debug = target.join("debug");
    let out_dir = target.join("csharp");
    std::fs::create_dir_all(&out_dir)
        .map_err(|e| format!("cannot create {}: {e}", out_dir.display()))?;
    let exe = out_dir.join("FramesTest.exe");
    let mut out_arg = std::ffi::OsString::from("-out:");
    out_arg.push(&exe);
    run(Command::new("mcs")
        .current_dir(root)
        .args(["-unsafe", "-warnaserror", "-debug"])
        .arg(out_arg)
        .args(SOURCES))?;

    // mono resolves [DllImport("mmf_ffi")] to libmmf_ffi.so through the loader's search path.
    let mut library_path = env::split_paths(&env::var_os("LD_LIBRARY_PATH").unwrap_or_default())
        .collect::<Vec<PathBuf>>();
    library_path.insert(0, debug.clone());
    let library_path = env::join_paths(library_path)
        .map_err(|e| format!("cannot build LD_LIBRARY_PATH from {}: {e}", debug.display()))?;
    run(Command::new("mono")
        .arg("--debug")
        .arg(&exe)
        .arg("--camera")
        .arg(debug.join("examples").join("camera"))
        .env("LD_LIBRARY_PATH", library_path))
}

/// Cargo's target directory as cargo itself resolves it (`CARGO_TARGET_DIR`, config files,
/// or `target/`): the cdylib and the example are wherever the builds above put them.
fn target_dir(root: &Path) -> Result<PathBuf> {
    let metadata = read(cargo(root).args(["metadata", "--format-version", "1", "--no-deps"]))?;
    let key = "\"target_directory\":\"";
    let start = metadata
        .find(key)
        .map(|at| at + key.len())
        .ok_or("`cargo metadata` printed no target_directory")?;
    // A JSON string: ends at the first unescaped quote; `\\` and `\"` are the escapes a path
    // can contain.
    let mut dir = String::new();
    let mut chars = metadata[start..].chars();
    while let Some(c) = chars.next() {
        match c {
            '"' => return Ok(PathBuf::from(dir)),
            '\\' => dir.extend(chars.next()),
            c => dir.push(c),
        }
    }
    Err("`cargo metadata` printed an unterminated target_directory".into())
}
