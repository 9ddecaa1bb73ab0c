//! Wine, to run the x86_64 Windows tests on Linux.
//!
//! Beyond the apt packages, wine needs three things before it can run our tests:
//!
//! - A prefix (`$WINEPREFIX`, by default `~/.wine`): wine's `C:` drive and registry. `wineboot -i`
//!   makes one; it needs no display.
//! - `bcryptprimitives.dll`. Rust's std imports `ProcessPrng` from it, and wine 8.0 (Debian 12's)
//!   has no such DLL, so every Rust program dies before `main` with STATUS_DLL_NOT_FOUND, which
//!   the shell sees as exit code 53. We build a stand-in from `xtask/wine/bcryptprimitives.c` and
//!   copy it into the prefix's `system32`. No DLL override is needed: wine has no builtin of that
//!   name, so its loader takes the native one it finds there.
//! - Proof: `xtask/wine/probe.rs`, built for Windows and run under wine, must exit with 0.
//!
//! While the Windows tests run, [`Server`] keeps one wineserver up for all of them.

use std::env;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::{run, Result};

/// The Windows target whose tests run under wine (its runner is set in `.cargo/config.toml`).
pub const TARGET: &str = "x86_64-pc-windows-gnu";

/// The C compiler for [`TARGET`], also its linker.
pub const MINGW_GCC: &str = "x86_64-w64-mingw32-gcc";

/// Sets, for a command that starts wine, what the caller has not set already:
///
/// - `WINEDEBUG=-all`: wine's fixme and err messages, and its hint that 32-bit wine is missing,
///   would bury the tests' output;
/// - `WINEDLLOVERRIDES=mscoree,mshtml=`: with .NET and the HTML engine disabled, wine never
///   stops to offer installing Mono or Gecko when it creates or updates a prefix.
pub fn env(cmd: &mut Command) -> &mut Command {
    for (key, value) in [
        ("WINEDEBUG", "-all"),
        ("WINEDLLOVERRIDES", "mscoree,mshtml="),
    ] {
        if env::var_os(key).is_none() {
            cmd.env(key, value);
        }
    }
    cmd
}

pub fn setup(root: &Path) -> Result {
    let prefix = prefix()?;
    init_prefix(&prefix)?;
    // Two directories: Windows looks for a DLL in the program's own directory first, so a probe
    // built beside the DLL would find it there and prove nothing about the prefix.
    let out_dir = root.join("target").join("xtask");
    let (dll_dir, probe_dir) = (out_dir.join("bcryptprimitives"), out_dir.join("probe"));
    for dir in [&dll_dir, &probe_dir] {
        fs::create_dir_all(dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    }
    install_bcryptprimitives(root, &dll_dir, &prefix)?;
    probe(root, &probe_dir)
}

fn prefix() -> Result<PathBuf> {
    match env::var_os("WINEPREFIX") {
        Some(prefix) if !prefix.is_empty() => Ok(prefix.into()),
        _ => match env::var_os("HOME") {
            Some(home) => Ok(Path::new(&home).join(".wine")),
            None => Err("neither WINEPREFIX nor HOME is set: where is the wine prefix?".into()),
        },
    }
}

fn init_prefix(prefix: &Path) -> Result {
    let system32 = prefix.join("drive_c").join("windows").join("system32");
    if system32.is_dir() && prefix.join("system.reg").is_file() {
        println!("ok: wine prefix {}", prefix.display());
        return Ok(());
    }
    run(env(&mut Command::new("wineboot")).arg("-i"))?;
    // wineboot can return while the wineserver it started is still writing the prefix out.
    run(Command::new("wineserver").arg("-w"))
}

fn install_bcryptprimitives(root: &Path, out_dir: &Path, prefix: &Path) -> Result {
    let source = root.join("xtask").join("wine").join("bcryptprimitives.c");
    let exports = source.with_extension("def");
    let dll = out_dir.join("bcryptprimitives.dll");
    if is_stale(&dll, &[&source, &exports]) {
        let mut gcc = Command::new(MINGW_GCC);
        gcc.args(["-O2", "-Wall", "-Wextra", "-Werror", "-shared", "-s"])
            // No build time in the PE header: the same source makes the same bytes.
            .arg("-Wl,--no-insert-timestamp")
            .arg("-o")
            .arg(&dll)
            .args([&source, &exports])
            .arg("-ladvapi32");
        run(&mut gcc)?;
    }

    let built = fs::read(&dll).map_err(|e| format!("cannot read {}: {e}", dll.display()))?;
    let installed = prefix
        .join("drive_c")
        .join("windows")
        .join("system32")
        .join("bcryptprimitives.dll");
    if fs::read(&installed).is_ok_and(|bytes| bytes == built) {
        println!("ok: {}", installed.display());
        return Ok(());
    }
    fs::write(&installed, &built)
        .map_err(|e| format!("cannot write {}: {e}", installed.display()))?;
    println!("installed {}", installed.display());
    Ok(())
}

fn probe(root: &Path, out_dir: &Path) -> Result {
    let source = root.join("xtask").join("wine").join("probe.rs");
    let exe = out_dir.join("probe.exe");
    if is_stale(&exe, &[&source]) {
        let mut rustc = Command::new("rustc");
        rustc
            .args(["--edition", "2021", "--target", TARGET])
            .arg(format!("-Clinker={MINGW_GCC}"))
            .arg("-o")
            .arg(&exe)
            .arg(&source);
        run(&mut rustc)?;
    }
    // Our own server, killed when the probe is done: left to itself, wine keeps background
    // processes for a few seconds, and they hold on to our stdout and stderr meanwhile.
    let _server = Server::start();
    run(env(Command::new("wine").arg(&exe))).map_err(|e| {
        format!(
            "{e}\nwine cannot run a Rust program. Exit status 53 (0xc0000135, STATUS_DLL_NOT_FOUND) \
             means a DLL is missing, most likely bcryptprimitives.dll; see xtask/src/wine.rs"
        )
    })
}

/// Whether `output` is missing or older than one of `inputs`.
fn is_stale(output: &Path, inputs: &[&Path]) -> bool {
    let modified = |path: &Path| fs::metadata(path).and_then(|m| m.modified()).ok();
    match modified(output) {
        None => true,
        Some(built) => inputs
            .iter()
            .any(|input| modified(input).map_or(true, |m| m > built)),
    }
}

/// A wineserver that stays up until dropped.
///
/// Wine starts a wineserver, and the services a prefix runs, with the first wine process, and
/// stops them soon after the last one exits. The Windows tests start many wine processes one after
/// the other (each test binary, each doctest, and the children that cross-process tests spawn), so
/// we start one persistent server (`wineserver -p`) for all of them, and kill it (`wineserver -k`,
/// which also ends any wine process a failed test left behind).
pub struct Server {
    started: bool,
}

impl Server {
    pub fn start() -> Server {
        // This fails when a wineserver already runs for the prefix: a developer's own, or one
        // still winding down after an earlier wine process. We then use it, and leave it alone.
        let started = run(Command::new("wineserver").arg("-p")).is_ok();
        if !started {
            println!("note: a wineserver already runs for this prefix: using it");
        }
        Server { started }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if self.started {
            // Nothing to do if it fails: the server is gone already, or will go with the machine.
            let _ = run(Command::new("wineserver").arg("-k"));
        }
    }
}
