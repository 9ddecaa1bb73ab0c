//! `cargo xtask setup`: installs what the checks need, each thing only if it is missing.
//!
//! Every part asks first (`dpkg-query`, `rustup … list`) and installs only what the answer lacks,
//! so running it again is quick and changes nothing.

use std::path::Path;
use std::process::{Command, Stdio};

use crate::{capture, cargo, read, run, wine, Result};

/// Debian packages, with what each is for.
const APT_PACKAGES: &[&str] = &[
    "wine",                  // the `wine` launcher, cargo's runner for x86_64-pc-windows-gnu
    "wine64",                // wine's 64-bit loader and wineserver
    "gcc-mingw-w64-x86-64",  // links x86_64-pc-windows-gnu; builds the bcryptprimitives stand-in
    "gcc-mingw-w64-i686",    // links i686-pc-windows-gnu
    "gcc-aarch64-linux-gnu", // links aarch64-unknown-linux-gnu; its libc6-arm64-cross is qemu's -L
    "qemu-user-static",      // qemu-aarch64-static, cargo's runner for aarch64-unknown-linux-gnu
    "ffmpeg", // an outside producer and consumer in the mmf-cli tests (ffmpeg, ffprobe)
    "python3-venv", // the `python` step's virtual environment (`python3 -m venv`)
    "mono-mcs", // compiles the C# binding and its test (the `csharp` step)
    "mono-runtime", // runs that test
];

/// The metapackage that Debian makes conflict with every cross gcc (see [`multilib_package`]).
const CONFLICTS_WITH_CROSS_GCC: &str = "gcc-multilib";

/// The package with the 32-bit C runtime that links i686-unknown-linux-gnu: the multilib
/// package of the host's own gcc, `gcc-12-multilib` on Debian 12. Not the `gcc-multilib`
/// metapackage: Debian makes it conflict with every cross gcc, gcc-aarch64-linux-gnu among
/// them (installing either removes the other), and all it adds is an `/usr/include/asm` link
/// for compiling 32-bit C, which nothing here does.
fn multilib_package() -> Result<String> {
    let version = read(Command::new("gcc").arg("-dumpversion"))?;
    let major = version.trim().split('.').next().unwrap_or_default();
    if major.is_empty() || !major.bytes().all(|b| b.is_ascii_digit()) {
        return Err(format!(
            "`gcc -dumpversion` printed {version:?}, not a version"
        ));
    }
    Ok(format!("gcc-{major}-multilib"))
}

/// Components of the toolchain that runs the checks.
const COMPONENTS: &[&str] = &["clippy", "rustfmt"];

/// Standard libraries of the targets the checks build for, besides the host.
const TARGETS: &[&str] = &[
    "i686-unknown-linux-gnu",
    "aarch64-unknown-linux-gnu",
    "x86_64-pc-windows-gnu",
    "i686-pc-windows-gnu",
    "x86_64-apple-darwin",
    "x86_64-unknown-freebsd",
];

/// Components of the nightly toolchain, which is there for Miri only.
const NIGHTLY_COMPONENTS: &[&str] = &["miri", "rust-src"];

pub fn install(root: &Path) -> Result {
    apt_packages()?;
    rust(root)?;
    cargo_fuzz(root)?;
    cbindgen(root)?;
    wine::setup(root)
}

/// cbindgen, which generates the C header of `crates/mmf-ffi` (the `ffi` step checks it).
pub fn cbindgen(root: &Path) -> Result {
    let installed = Command::new("cbindgen")
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|status| status.success());
    if installed {
        println!("ok: cbindgen");
        return Ok(());
    }
    run(cargo(root).args(["install", "cbindgen", "--locked"]))
}

/// cargo-fuzz, which builds (`fuzz-build`) and runs (`cargo xtask fuzz`) the fuzz target.
pub fn cargo_fuzz(root: &Path) -> Result {
    cargo_subcommand(root, "fuzz")
}

/// Installs `cargo-<name>` from crates.io unless `cargo <name> --version` already answers.
pub fn cargo_subcommand(root: &Path, name: &str) -> Result {
    let installed = cargo(root)
        .args([name, "--version"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|status| status.success());
    if installed {
        println!("ok: cargo-{name}");
        return Ok(());
    }
    run(cargo(root).args(["install", &format!("cargo-{name}"), "--locked"]))
}

fn apt_packages() -> Result {
    let multilib = multilib_package()?;
    let wanted: Vec<&str> = APT_PACKAGES
        .iter()
        .copied()
        .chain([multilib.as_str()])
        .collect();
    // One line per package that dpkg knows of, e.g. `wine64 installed` or `wine64 config-files`.
    // dpkg-query exits with 1 when it knows nothing of some package: the listing tells which.
    let mut query = Command::new("dpkg-query");
    query
        .args(["-W", "-f", "${Package} ${db:Status-Status}\n"])
        .args(&wanted)
        .arg(CONFLICTS_WITH_CROSS_GCC)
        .stderr(Stdio::null());
    let listing = String::from_utf8_lossy(&capture(&mut query)?.stdout).into_owned();
    let installed: Vec<&str> = listing
        .lines()
        .filter_map(|line| line.strip_suffix(" installed"))
        .collect();
    let missing: Vec<&str> = wanted
        .iter()
        .copied()
        .filter(|p| !installed.contains(p))
        .collect();
    if missing.is_empty() {
        println!("ok: apt packages {}", wanted.join(" "));
        return Ok(());
    }
    if installed.contains(&CONFLICTS_WITH_CROSS_GCC) && missing.contains(&"gcc-aarch64-linux-gnu") {
        println!(
            "note: apt removes {CONFLICTS_WITH_CROSS_GCC} to install gcc-aarch64-linux-gnu \
             (Debian makes them conflict); i686 links with {multilib}"
        );
    }

    // A fresh machine has no package lists yet, and CI has no terminal to answer questions.
    let apt_get = || {
        let mut apt_get = Command::new("apt-get");
        apt_get
            .env("DEBIAN_FRONTEND", "noninteractive")
            .stdin(Stdio::null());
        apt_get
    };
    run(apt_get().arg("update"))?;
    run(apt_get().args(["install", "-y"]).args(&missing))
}

fn rust(root: &Path) -> Result {
    // Without --toolchain, rustup acts on the toolchain that runs us: rustup's cargo proxy passes
    // it down in RUSTUP_TOOLCHAIN, so `cargo +beta xtask setup` sets up beta.
    add_missing(
        root,
        &["component", "list", "--installed"],
        COMPONENTS,
        &["component", "add"],
    )?;
    add_missing(
        root,
        &["target", "list", "--installed"],
        TARGETS,
        &["target", "add"],
    )?;

    let toolchains = read(rustup(root).args(["toolchain", "list"]))?;
    if toolchains.lines().any(|line| line.starts_with("nightly-")) {
        add_missing(
            root,
            &["component", "list", "--installed", "--toolchain", "nightly"],
            NIGHTLY_COMPONENTS,
            &["component", "add", "--toolchain", "nightly"],
        )?;
    } else {
        // Miri is missing from some nightlies: --allow-downgrade takes the newest one that has it.
        run(rustup(root)
            .args(["toolchain", "install", "nightly", "--profile", "minimal"])
            .args([
                "--component",
                &NIGHTLY_COMPONENTS.join(","),
                "--allow-downgrade",
            ]))?;
    }
    // Miri's own build of std: slow the first time, then a check of a few milliseconds.
    run(cargo(root).args(["+nightly", "miri", "setup"]))
}

/// Asks rustup for a list (`list` names the subcommand), and adds (`add`) what `wanted` lacks.
fn add_missing(root: &Path, list: &[&str], wanted: &[&str], add: &[&str]) -> Result {
    let installed = read(rustup(root).args(list))?;
    // A line is a target (`x86_64-apple-darwin`), or a component with its target
    // (`clippy-x86_64-unknown-linux-gnu`) or without (`rust-src`).
    let has = |name: &str| {
        installed
            .lines()
            .any(|line| line == name || line.starts_with(&format!("{name}-")))
    };
    let missing: Vec<&str> = wanted.iter().copied().filter(|name| !has(name)).collect();
    if missing.is_empty() {
        println!("ok: {}", wanted.join(" "));
        return Ok(());
    }
    run(rustup(root).args(add).args(&missing))
}

fn rustup(root: &Path) -> Command {
    let mut rustup = Command::new("rustup");
    rustup.current_dir(root);
    rustup
}
