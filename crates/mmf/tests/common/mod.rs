//! Shared support for `mmf`'s integration tests: child processes, unique names, records.
//!
//! Include it from a test file with `mod common;` (items a file does not use are allowed to
//! be dead). Other test files may reuse it; keep the helpers below stable.
//!
//! # Child processes
//!
//! Multi-process tests re-launch their own test binary (`std::env::current_exe()`) as
//! `<exe> --exact child --include-ignored --nocapture --test-threads=1` with [`ROLE_VAR`] set,
//! so the child runs only the test named `child`, which dispatches on the role. Every test file
//! that spawns children therefore defines:
//!
//! ```ignore
//! #[test]
//! #[ignore = "not a test: the entry point of this file's child processes"]
//! fn child() {
//!     common::child_main(|role| match role {
//!         "verify" => verify_role(),
//!         other => panic!("unknown role {other}"),
//!     });
//! }
//! ```
//!
//! `child` is not a test, so it is ignored in a normal run (the report counts it as ignored,
//! never as passed); run without [`ROLE_VAR`] (`cargo test -- --include-ignored`) it does
//! nothing. Arguments travel in environment variables (`MMF_CHILD_ARG_<KEY>`, read with
//! [`arg`]); the child reports to its parent with [`say`] (one `@mmf <key> <value>` line on
//! stdout, which the parent reads with [`Child::expect`] or [`Output::value`]) and takes
//! commands from its stdin with [`command`]. A role fails by panicking, which makes the child
//! exit non-zero and the parent's [`Child::finish`] fail.
//!
//! This works on Linux and on Windows under wine: a process started from inside wine with
//! `std::process::Command` runs under wine too. A binary for another architecture, run under
//! a user-mode emulator that the kernel does not start by itself (qemu-user without
//! binfmt_misc), would be started natively and fail; [`RUNNER_VAR`] names the emulator, and
//! every child is started through it ([`self_command`]).

#![allow(dead_code)]

use std::io::{BufRead, BufReader, Write};
use std::process::{ChildStdin, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicU32, Ordering::Relaxed};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// Environment variable naming the role a re-launched test binary plays.
pub const ROLE_VAR: &str = "MMF_CHILD_ROLE";
/// Environment variable naming the program that must start a re-launched test binary, with
/// its arguments, separated by spaces: e.g. `qemu-aarch64-static -L /usr/aarch64-linux-gnu`
/// for an aarch64 binary on an x86_64 host, where cargo starts the parent through its
/// `runner` but nothing starts the children so (`cargo xtask test` sets it for its aarch64
/// step). Unset or empty: the binary is started directly. Children inherit it, so their own
/// children are started the same way.
pub const RUNNER_VAR: &str = "MMF_TEST_RUNNER";
/// Prefix of the environment variables that carry a child's arguments.
pub const ARG_PREFIX: &str = "MMF_CHILD_ARG_";
/// Marker that starts a message from a child in its stdout.
pub const MARK: &str = "@mmf ";
/// Default time a parent gives a child to report or exit. Generous: wine starts slowly, and
/// the 2-core test machine runs several test binaries at once.
pub const CHILD_TIMEOUT: Duration = Duration::from_secs(60);

/// A segment name unique to this run: tag, pid, a per-process counter and a time nonce
/// (so a stale segment left by a crashed earlier run with the same pid cannot collide).
pub fn unique_name(tag: &str) -> String {
    static COUNTER: AtomicU32 = AtomicU32::new(0);
    let nonce = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos() % 1_000_000);
    format!(
        "mmft-{tag}-{}-{}-{nonce}",
        std::process::id(),
        COUNTER.fetch_add(1, Relaxed)
    )
}

/// Environment variable holding how many times slower than native code the test binaries
/// run (a whole number, 1 if unset): `cargo xtask test` sets it for its step under qemu-user,
/// where emulated code runs several times slower. Read through [`time_scale`] and applied
/// only where a test would otherwise measure the emulator rather than `mmf`: to a window of
/// wall-clock time in which a test expects some amount of work done. Never to a CPU-time
/// fraction, a count, or a bound that `mmf` itself promises (a recovery interval, a
/// timeout), which must hold under emulation as they are.
pub const TIME_SCALE_VAR: &str = "MMF_TEST_TIME_SCALE";

/// The factor of [`TIME_SCALE_VAR`]: 1 if unset; panics on anything but a whole number from
/// 1 to 100, so a typo cannot silently stretch (or shrink) a test.
pub fn time_scale() -> u32 {
    match std::env::var(TIME_SCALE_VAR) {
        Err(_) => 1,
        Ok(value) => value
            .parse()
            .ok()
            .filter(|scale| (1..=100).contains(scale))
            .unwrap_or_else(|| panic!("{TIME_SCALE_VAR}={value:?} is not a whole number 1..=100")),
    }
}

/// The runner of [`RUNNER_VAR`] as program and arguments; empty if there is none.
pub fn runner() -> Vec<String> {
    std::env::var(RUNNER_VAR)
        .unwrap_or_default()
        .split_whitespace()
        .map(str::to_owned)
        .collect()
}

/// A command that starts this test binary again: `wrapper…` (a host program such as
/// `setpriv`, which then starts the rest), the [`RUNNER_VAR`] runner if any, then the binary.
/// Tests that build their own child command (rather than [`child`]) must start from this.
pub fn self_command(wrapper: &[&str]) -> Command {
    let exe = std::env::current_exe().expect("current_exe");
    let runner = runner();
    let mut words = wrapper
        .iter()
        .map(|s| (*s).to_owned())
        .chain(runner)
        .map(std::ffi::OsString::from)
        .chain(std::iter::once(exe.into_os_string()));
    let mut cmd = Command::new(words.next().expect("at least the binary"));
    cmd.args(words);
    cmd
}

/// How long a child started through a [`RUNNER_VAR`] runner may take to exec (see
/// [`spawn`]); it takes milliseconds, a few seconds on an overloaded machine.
const EXEC_TIMEOUT: Duration = Duration::from_secs(15);
/// How many times [`spawn`] starts a child that never got to exec, before it gives up.
const SPAWN_ATTEMPTS: u32 = 3;
/// Environment variable that [`spawn`] sets to a value unique to each child it starts: a
/// child whose `/proc/<pid>/environ` holds it has exec'd.
const SPAWN_MARK_VAR: &str = "MMF_TEST_SPAWN";

/// Starts `cmd` (built on [`self_command`]).
///
/// Under a [`RUNNER_VAR`] runner, also waits until the child has exec'd, and starts it again
/// if it never does. qemu-user (7.2, Debian 12) emulates the `clone(CLONE_VM | CLONE_VFORK)`
/// of `posix_spawn` as a plain fork, so `spawn` returns before the child execs; and now and
/// then (twice in about 120 runs of the channel suite, on the loaded 2-core test machine)
/// that forked copy of the multi-threaded parent deadlocks inside the emulator before it
/// reaches `execve` (seen: still the parent's command line, every thread asleep on a futex,
/// and no output, for a minute). No code of this crate runs in such a child, so starting it
/// again hides nothing about `mmf`; each retry is reported on stderr, past the harness's
/// capture. A child that did exec is never restarted, however silent. Without a runner,
/// `posix_spawn` itself returns only once the child has exec'd, and this is a plain `spawn`.
pub fn spawn(cmd: &mut Command, what: &str) -> std::process::Child {
    static SPAWNED: AtomicU32 = AtomicU32::new(0);
    let emulated = !runner().is_empty();
    for attempt in 1.. {
        let mark = format!("{}-{}", std::process::id(), SPAWNED.fetch_add(1, Relaxed));
        cmd.env(SPAWN_MARK_VAR, &mark);
        let mut proc = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("spawning child {what:?}: {e}"));
        if !emulated || exec_seen(&proc, &mark) {
            return proc;
        }
        let _ = proc.kill();
        let _ = proc.wait();
        assert!(
            attempt < SPAWN_ATTEMPTS,
            "child {what:?} never got to exec in {SPAWN_ATTEMPTS} attempts of {EXEC_TIMEOUT:?}"
        );
        // Straight to stderr, not through `eprintln!`, which the harness captures and
        // shows only for a failed test: a retry must show in every log.
        let _ = writeln!(
            std::io::stderr(),
            "child {what:?} (pid {}) did not exec within {EXEC_TIMEOUT:?}: stuck in the \
             emulator's fork; killed and started again",
            proc.id()
        );
    }
    unreachable!()
}

/// Whether `proc` exec'd within [`EXEC_TIMEOUT`]: its environment holds `mark`. An
/// environment we may not read (a child that changed user, e.g. through `setpriv`) counts
/// as exec'd: reading it fails only once the new program runs as someone else.
fn exec_seen(proc: &std::process::Child, mark: &str) -> bool {
    let needle = format!("{SPAWN_MARK_VAR}={mark}\0");
    let path = format!("/proc/{}/environ", proc.id());
    let deadline = Instant::now() + EXEC_TIMEOUT;
    loop {
        match std::fs::read(&path) {
            Ok(environ)
                if environ
                    .windows(needle.len())
                    .any(|w| w == needle.as_bytes()) =>
            {
                return true
            }
            // Empty: in the middle of its exec (the new image's environment is not set up
            // yet) or exited (a zombie's). An error: reaped, or not ours to read. None of
            // these is a forked copy that never reached exec.
            Ok(environ) if environ.is_empty() => return true,
            Err(_) => return true,
            Ok(_) if Instant::now() >= deadline => return false,
            Ok(_) => thread::sleep(Duration::from_millis(5)),
        }
    }
}

// ---------------------------------------------------------------------------------------
// Child side
// ---------------------------------------------------------------------------------------

/// Runs `dispatch(role)` if this process was launched as a child, and does nothing otherwise.
pub fn child_main(dispatch: impl FnOnce(&str)) {
    if let Ok(role) = std::env::var(ROLE_VAR) {
        dispatch(&role);
    }
}

/// Argument `key` given to this child by [`ChildBuilder::arg`]; panics if it is missing.
pub fn arg(key: &str) -> String {
    std::env::var(format!("{ARG_PREFIX}{}", key.to_ascii_uppercase()))
        .unwrap_or_else(|_| panic!("child argument {key:?} missing"))
}

/// Argument `key` parsed as a number.
pub fn arg_u64(key: &str) -> u64 {
    let value = arg(key);
    value
        .parse()
        .unwrap_or_else(|_| panic!("child argument {key}={value:?} is not a number"))
}

/// Sends `key value` to the parent (one line on stdout, flushed at once).
pub fn say(key: &str, value: impl std::fmt::Display) {
    let mut out = std::io::stdout().lock();
    writeln!(out, "{MARK}{key} {value}").expect("write to parent");
    out.flush().expect("flush to parent");
}

/// The next command line from the parent (see [`Child::send`]), or `None` at end of input.
pub fn command() -> Option<String> {
    let mut line = String::new();
    match std::io::stdin().lock().read_line(&mut line) {
        Ok(0) => None,
        Ok(_) => Some(line.trim_end().to_owned()),
        Err(e) => panic!("reading a command from the parent: {e}"),
    }
}

// ---------------------------------------------------------------------------------------
// Parent side
// ---------------------------------------------------------------------------------------

/// Describes a child to launch: which `child` test to run, its role and arguments.
pub struct ChildBuilder {
    role: String,
    test: String,
    args: Vec<(String, String)>,
    wrapper: Vec<String>,
}

/// A child for `role`, running the test named `child` of this binary.
pub fn child(role: &str) -> ChildBuilder {
    ChildBuilder {
        role: role.to_owned(),
        test: "child".to_owned(),
        args: Vec::new(),
        wrapper: Vec::new(),
    }
}

impl ChildBuilder {
    /// Passes argument `key` (read in the child with [`arg`]).
    pub fn arg(mut self, key: &str, value: impl std::fmt::Display) -> Self {
        self.args
            .push((key.to_ascii_uppercase(), value.to_string()));
        self
    }

    /// Runs a test other than `child` (its exact name).
    pub fn test(mut self, name: &str) -> Self {
        self.test = name.to_owned();
        self
    }

    /// Starts the test binary through `program args…` (e.g. `setpriv --reuid=…`); the
    /// [`RUNNER_VAR`] runner, if any, comes after it, right before the binary.
    pub fn wrapper(mut self, program_and_args: &[&str]) -> Self {
        self.wrapper = program_and_args.iter().map(|s| (*s).to_owned()).collect();
        self
    }

    /// Launches the child; stdout and stderr are collected by background threads.
    pub fn spawn(self) -> Child {
        let wrapper: Vec<&str> = self.wrapper.iter().map(String::as_str).collect();
        let mut cmd = self_command(&wrapper);
        cmd.args([
            "--exact",
            &self.test,
            "--include-ignored",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(ROLE_VAR, &self.role)
        .env("RUST_BACKTRACE", "1")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
        for (key, value) in &self.args {
            cmd.env(format!("{ARG_PREFIX}{key}"), value);
        }
        let mut proc = spawn(&mut cmd, &self.role);
        let stdout = proc.stdout.take().expect("piped stdout");
        let stderr = proc.stderr.take().expect("piped stderr");
        let (tx, lines) = mpsc::channel();
        let stdout_thread = thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let stderr_thread = thread::spawn(move || {
            let mut all = String::new();
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                all.push_str(&line);
                all.push('\n');
            }
            all
        });
        Child {
            role: self.role,
            stdin: proc.stdin.take(),
            proc,
            lines,
            seen: Vec::new(),
            stdout_thread: Some(stdout_thread),
            stderr_thread: Some(stderr_thread),
        }
    }
}

/// A running child. Dropping it without [`finish`](Self::finish) kills it.
pub struct Child {
    role: String,
    proc: std::process::Child,
    stdin: Option<ChildStdin>,
    lines: Receiver<String>,
    seen: Vec<String>,
    stdout_thread: Option<JoinHandle<()>>,
    stderr_thread: Option<JoinHandle<String>>,
}

/// What a finished child printed, and how it exited.
#[derive(Debug)]
pub struct Output {
    pub role: String,
    pub status: ExitStatus,
    /// Every stdout line (harness lines included).
    pub stdout: Vec<String>,
    pub stderr: String,
}

impl Child {
    /// Sends one command line to the child's stdin (read there with [`command`]).
    pub fn send(&mut self, command: &str) {
        let stdin = self.stdin.as_mut().expect("stdin still open");
        writeln!(stdin, "{command}")
            .and_then(|()| stdin.flush())
            .unwrap_or_else(|e| panic!("sending {command:?} to child {:?}: {e}", self.role));
    }

    /// The OS process id of the launched program (the wrapper's, if there is one).
    pub fn id(&self) -> u32 {
        self.proc.id()
    }

    /// Kills the launched program (SIGKILL on Unix) and reaps it; returns its output.
    pub fn kill(&mut self) -> Output {
        let _ = self.proc.kill();
        let status = self.proc.wait().expect("wait after kill");
        self.collect(status)
    }

    /// Waits up to `timeout` for the child to [`say`] `key`, and returns the value. Kills the
    /// child and fails the test if it exits or times out first.
    pub fn expect(&mut self, key: &str, timeout: Duration) -> String {
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) => {
                    let found = parse_mark(&line, key).map(str::to_owned);
                    self.seen.push(line);
                    if let Some(value) = found {
                        return value;
                    }
                }
                Err(RecvTimeoutError::Timeout) => {
                    self.fail(&format!("did not say {key:?} within {timeout:?}"))
                }
                Err(RecvTimeoutError::Disconnected) => {
                    self.fail(&format!("closed its stdout before saying {key:?}"))
                }
            }
        }
    }

    /// Closes stdin, waits up to `timeout` for the child to exit, and returns its output.
    /// Kills the child and fails the test on timeout or on a non-zero exit status.
    pub fn finish(mut self, timeout: Duration) -> Output {
        let output = self.wait(timeout);
        assert!(
            output.status.success(),
            "child {:?} failed with {}\n--- stdout\n{}\n--- stderr\n{}",
            output.role,
            output.status,
            output.stdout.join("\n"),
            output.stderr
        );
        output
    }

    /// Like [`finish`](Self::finish) but accepts any exit status.
    pub fn wait(&mut self, timeout: Duration) -> Output {
        drop(self.stdin.take());
        let deadline = Instant::now() + timeout;
        let status = loop {
            match self.proc.try_wait() {
                Ok(Some(status)) => break status,
                Ok(None) if Instant::now() < deadline => thread::sleep(Duration::from_millis(5)),
                Ok(None) => self.fail(&format!("did not exit within {timeout:?}")),
                Err(e) => panic!("waiting for child {:?}: {e}", self.role),
            }
        };
        self.collect(status)
    }

    fn collect(&mut self, status: ExitStatus) -> Output {
        if let Some(t) = self.stdout_thread.take() {
            let _ = t.join();
        }
        let mut stdout = std::mem::take(&mut self.seen);
        stdout.extend(self.lines.try_iter());
        let stderr = self
            .stderr_thread
            .take()
            .and_then(|t| t.join().ok())
            .unwrap_or_default();
        Output {
            role: self.role.clone(),
            status,
            stdout,
            stderr,
        }
    }

    /// Kills the child, then fails the test with everything it printed.
    fn fail(&mut self, why: &str) -> ! {
        let _ = self.proc.kill();
        let status = self.proc.wait().expect("wait after kill");
        let out = self.collect(status);
        panic!(
            "child {:?} {why} (killed; {})\n--- stdout\n{}\n--- stderr\n{}",
            out.role,
            out.status,
            out.stdout.join("\n"),
            out.stderr
        );
    }
}

impl Drop for Child {
    fn drop(&mut self) {
        // A test that panicked part-way must not leave children running (or blocked on a
        // lock the dropped parent held). Errors are moot: it may have exited already.
        if self.stdout_thread.is_some() {
            let _ = self.proc.kill();
            let _ = self.proc.wait();
        }
    }
}

fn parse_mark<'a>(line: &'a str, key: &str) -> Option<&'a str> {
    // Not necessarily at the start: the harness prints "test child ... " without a newline
    // before the test body runs.
    let rest = &line[line.find(MARK)? + MARK.len()..];
    let (k, value) = rest.split_once(' ').unwrap_or((rest, ""));
    (k == key).then_some(value)
}

impl Output {
    /// The value of the last `key` the child said, if any.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.stdout.iter().rev().find_map(|l| parse_mark(l, key))
    }

    /// The value of `key` as a number; fails the test if it is missing.
    pub fn value(&self, key: &str) -> u64 {
        let value = self.get(key).unwrap_or_else(|| {
            panic!(
                "child {:?} did not say {key:?}; stdout:\n{}",
                self.role,
                self.stdout.join("\n")
            )
        });
        value
            .parse()
            .unwrap_or_else(|_| panic!("child {:?}: {key}={value:?} is not a number", self.role))
    }
}

// ---------------------------------------------------------------------------------------
// Lock results
// ---------------------------------------------------------------------------------------

/// Why a lock call returned no plain guard, as an [`mmf::Error`] (a poisoned guard is
/// released and reported as [`mmf::Error::Poisoned`]); `None` if it returned a guard, which
/// is dropped at once. For `matches!(lock_error(m.try_write()), Some(Error::WouldBlock))`.
pub fn lock_error<G>(result: mmf::LockResult<G>) -> Option<mmf::Error> {
    result.err().map(mmf::LockError::into_error)
}

// ---------------------------------------------------------------------------------------
// Data helpers
// ---------------------------------------------------------------------------------------

/// SplitMix64: a tiny deterministic PRNG, so parent and child derive the same bytes from a
/// seed without sharing anything else.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Rng(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// A value in `0..n`.
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n
    }

    pub fn fill(&mut self, buf: &mut [u8]) {
        for chunk in buf.chunks_mut(8) {
            let bytes = self.next_u64().to_le_bytes();
            chunk.copy_from_slice(&bytes[..chunk.len()]);
        }
    }
}

/// `len` bytes derived from `seed`.
pub fn pattern(seed: u64, len: usize) -> Vec<u8> {
    let mut buf = vec![0; len];
    Rng::new(seed).fill(&mut buf);
    buf
}

/// FNV-1a 64 over `bytes`.
pub fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, &b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}
