//! Owner-death recovery and poisoning with real processes (issue 4).
//!
//! The kill loop: a child process takes the write lock or a read lock of a segment and is
//! killed (`Child::kill`: SIGKILL on Linux, TerminateProcess on Windows) at a random moment —
//! before it asks for the lock, while it asks, while it holds it, in the middle of scribbling
//! over the data region, or after it released it. The parent must then get the write lock
//! within the recovery bound, and the lock must be poisoned exactly when a writer died holding
//! it. Half of the killed children are reaped before the check and half are left as zombies
//! until after it. The worst recovery time seen is printed.

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use common::{Rng, ROLE_VAR};
use mmf::{Error, LockError, Mmf, MmfOptions, DEFAULT_RECOVERY_INTERVAL};

/// How much later than the recovery interval a recovery may come: scheduling on a loaded
/// 2-core machine, process teardown, and under wine a much slower everything.
fn slack() -> Duration {
    if cfg!(windows) {
        Duration::from_millis(1500)
    } else {
        Duration::from_millis(400)
    }
}

fn iterations() -> u32 {
    // Fewer under wine, where every process start is slower.
    if cfg!(windows) {
        50
    } else {
        200
    }
}

#[test]
#[ignore = "not a test: the entry point of this file's child processes, which run it with --include-ignored"]
fn child() {
    common::child_main(|role| match role {
        "hold" => hold_role(),
        other => panic!("unknown role {other}"),
    });
}

/// Child: open the segment, say "locking", take the lock the parent asked for, say "locked",
/// then (as asked) scribble over the data forever, or release and say "released", or just
/// wait to be killed.
fn hold_role() {
    let segment = Mmf::open(&common::arg("name")).expect("open the segment");
    let mode = common::arg("mode");
    let release = common::arg("release") == "1";
    let mut rng = Rng::new(common::arg_u64("seed"));
    common::say("locking", 1);
    match mode.as_str() {
        "read" => {
            let guard = segment
                .read()
                .expect("read lock (the parent clears poison)");
            common::say("locked", 1);
            if release {
                drop(guard);
                common::say("released", 1);
            } else {
                std::mem::forget(guard);
            }
        }
        "write" | "scribble" => {
            let mut guard = segment
                .write()
                .expect("write lock (the parent clears poison)");
            common::say("locked", 1);
            if release {
                drop(guard);
                common::say("released", 1);
            } else if mode == "scribble" {
                loop {
                    rng.fill(&mut guard[..]);
                }
            } else {
                std::mem::forget(guard);
            }
        }
        other => panic!("unknown mode {other}"),
    }
    loop {
        thread::sleep(Duration::from_secs(1));
    }
}

/// A killable child with its stdout lines arriving on a channel.
struct Victim {
    proc: std::process::Child,
    lines: mpsc::Receiver<String>,
    seen: Vec<String>,
    reader: Option<thread::JoinHandle<()>>,
}

impl Victim {
    fn spawn(name: &str, mode: &str, release: bool, seed: u64) -> Self {
        let exe = std::env::current_exe().expect("current_exe");
        let mut proc = Command::new(exe)
            .args([
                "--exact",
                "child",
                "--include-ignored",
                "--nocapture",
                "--test-threads=1",
            ])
            .env(ROLE_VAR, "hold")
            .env(format!("{}NAME", common::ARG_PREFIX), name)
            .env(format!("{}MODE", common::ARG_PREFIX), mode)
            .env(
                format!("{}RELEASE", common::ARG_PREFIX),
                if release { "1" } else { "0" },
            )
            .env(format!("{}SEED", common::ARG_PREFIX), seed.to_string())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn the child");
        let stdout = proc.stdout.take().expect("piped stdout");
        let (tx, lines) = mpsc::channel();
        let reader = thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Victim {
            proc,
            lines,
            seen: Vec::new(),
            reader: Some(reader),
        }
    }

    fn said(&self, key: &str) -> bool {
        let mark = format!("{}{key} ", common::MARK);
        // `contains`: the harness prints "test child ... " without a newline before the first.
        self.seen.iter().any(|l| l.contains(&mark))
    }

    /// Waits up to `timeout` for the child to say `key`.
    fn wait_for(&mut self, key: &str, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        while !self.said(key) {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) => self.seen.push(line),
                Err(_) => return false,
            }
        }
        true
    }

    /// Kills the child and collects everything it said before dying (its stdout closes when
    /// it dies, zombie or not). Returns when it is dead.
    fn kill(&mut self) {
        self.proc.kill().expect("kill the child");
        if let Some(reader) = self.reader.take() {
            reader.join().expect("stdout reader");
        }
        self.seen.extend(self.lines.try_iter());
    }

    fn reap(&mut self) {
        self.proc.wait().expect("reap the child");
    }
}

impl Drop for Victim {
    fn drop(&mut self) {
        // Ignored: it is normally dead already; this only cleans up after a failed assertion.
        let _ = self.proc.kill();
        let _ = self.proc.wait();
    }
}

#[derive(Default, Debug)]
struct Tally {
    runs: u32,
    died_holding_write: u32,
    died_holding_read: u32,
    died_mid_acquire: u32,
    died_before_or_after: u32,
    zombies: u32,
    poisoned: u32,
    worst: Duration,
}

#[test]
fn killed_lock_holders_are_recovered_within_the_bound_and_poison_exactly_when_writing() {
    let name = common::unique_name("robust-kill");
    let segment = MmfOptions::new(&name).create(64 * 1024).unwrap();
    let bound = DEFAULT_RECOVERY_INTERVAL * 2 + slack();
    let seed = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(1, |d| d.as_nanos() as u64);
    println!("kill loop seed {seed}");
    let mut rng = Rng::new(seed);
    let mut tally = Tally::default();
    for i in 0..iterations() {
        let mode = ["read", "write", "scribble"][rng.below(3) as usize];
        let release = rng.below(5) == 0;
        let reap_first = rng.below(2) == 0;
        let mut victim = Victim::spawn(&name, mode, release, rng.next_u64());
        // When to kill: 0 at once, 1 as soon as it asks for the lock, 2 while it holds
        // (or after it released) the lock, a few milliseconds in.
        let when = rng.below(8);
        match when {
            0 => {}
            1 => {
                assert!(
                    victim.wait_for("locking", Duration::from_secs(30)),
                    "iteration {i}: child never started; said {:?}",
                    victim.seen
                );
            }
            _ => {
                let key = if release { "released" } else { "locked" };
                assert!(
                    victim.wait_for(key, Duration::from_secs(30)),
                    "iteration {i}: child never said {key}; said {:?}",
                    victim.seen
                );
                thread::sleep(Duration::from_micros(rng.below(5_000)));
            }
        }
        let killed = Instant::now();
        victim.kill();
        if reap_first {
            victim.reap();
        } else {
            tally.zombies += 1;
        }
        let took = segment.write_timeout(bound);
        let recovery = killed.elapsed();
        let poisoned = match took {
            Ok(guard) => {
                drop(guard);
                false
            }
            Err(LockError::Poisoned(guard)) => {
                drop(guard.into_inner());
                true
            }
            Err(LockError::Failed(e)) => panic!(
                "iteration {i} ({mode}, release {release}, kill phase {when}): no write lock \
                 within {bound:?} of the kill: {e}; child said {:?}",
                victim.seen
            ),
        };
        assert!(
            recovery < bound,
            "iteration {i}: recovery took {recovery:?}"
        );
        let locking = victim.said("locking");
        let locked = victim.said("locked");
        let released = victim.said("released");
        let writer = mode != "read";
        if writer && locked && !released {
            assert!(
                poisoned,
                "iteration {i}: a writer died holding the lock, not poisoned"
            );
            tally.died_holding_write += 1;
        } else if !writer && locked && !released {
            assert!(!poisoned, "iteration {i}: a dead reader poisoned the lock");
            tally.died_holding_read += 1;
        } else if locking && !locked {
            // Killed between asking and saying it has it: either is right for a writer.
            assert!(
                writer || !poisoned,
                "iteration {i}: a reader poisoned the lock"
            );
            tally.died_mid_acquire += 1;
        } else {
            assert!(
                !poisoned,
                "iteration {i}: poisoned although the child held no write lock (said {:?})",
                victim.seen
            );
            tally.died_before_or_after += 1;
        }
        assert_eq!(segment.is_poisoned(), poisoned);
        if poisoned {
            tally.poisoned += 1;
            segment.clear_poison().unwrap();
            // The copy API refuses a poisoned lock; after clearing it works again.
            segment.write_at(0, &[0; 16]).unwrap();
        }
        if !reap_first {
            victim.reap();
        }
        tally.runs += 1;
        tally.worst = tally.worst.max(recovery);
    }
    println!(
        "kill loop: {} iterations, worst recovery {:?} (bound {bound:?}); {tally:?}",
        tally.runs, tally.worst
    );
    assert!(tally.died_holding_write > 0 && tally.died_holding_read > 0);
}

/// A writer killed while it waits for a reader to leave has set the writer bit, so new
/// readers hold back, but it has written nothing: its claim is taken back without poisoning.
#[test]
fn a_writer_killed_while_waiting_for_readers_does_not_poison() {
    let name = common::unique_name("robust-drain");
    let segment = MmfOptions::new(&name).create(4096).unwrap();
    let bound = DEFAULT_RECOVERY_INTERVAL * 2 + slack();
    let read_guard = segment.read().unwrap();
    let mut victim = Victim::spawn(&name, "write", false, 1);
    assert!(victim.wait_for("locking", Duration::from_secs(30)));
    // Long enough to be asleep waiting for our read lock to go.
    thread::sleep(Duration::from_millis(200));
    assert!(!victim.said("locked"), "the writer got in past a read lock");
    victim.kill();
    victim.reap();
    drop(read_guard);
    let start = Instant::now();
    match segment.write_timeout(bound) {
        Ok(guard) => drop(guard),
        Err(LockError::Poisoned(_)) => panic!("a writer that never got in poisoned the lock"),
        Err(LockError::Failed(e)) => panic!("no write lock within {bound:?}: {e}"),
    }
    assert!(start.elapsed() < bound);
    assert!(!segment.is_poisoned());
}

/// The copy API on a poisoned lock: nothing is copied, `Error::Poisoned`, on read-write and
/// read-only handles alike; `?` on a guard method gives the same error.
#[test]
fn copy_api_refuses_a_poisoned_lock_until_cleared() {
    let name = common::unique_name("robust-copy");
    let segment = Mmf::create(&name, 4096).unwrap();
    segment.write_at(0, b"before").unwrap();
    let mut victim = Victim::spawn(&name, "scribble", false, 7);
    assert!(victim.wait_for("locked", Duration::from_secs(30)));
    victim.kill();
    victim.reap();
    let read_only = Mmf::open_read_only(&name).unwrap();
    let mut buf = [0; 6];
    // The first acquisition recovers the dead writer's lock.
    assert!(matches!(segment.read_at(0, &mut buf), Err(Error::Poisoned)));
    assert!(segment.is_poisoned() && read_only.is_poisoned());
    assert!(matches!(
        read_only.read_at(0, &mut buf),
        Err(Error::Poisoned)
    ));
    assert!(matches!(
        segment.write_at(0, b"after!"),
        Err(Error::Poisoned)
    ));
    let via_question_mark = || -> mmf::Result<()> {
        drop(segment.read()?);
        Ok(())
    };
    assert!(matches!(via_question_mark(), Err(Error::Poisoned)));
    assert!(matches!(
        read_only.clear_poison(),
        Err(Error::ReadOnly { .. })
    ));
    // Repair under the guard the error hands over, then clear.
    match segment.write() {
        Err(LockError::Poisoned(poisoned)) => {
            let mut guard = poisoned.into_inner();
            guard[..6].copy_from_slice(b"repair");
            segment.clear_poison().unwrap();
        }
        Ok(_) => panic!("the lock should still be poisoned"),
        Err(LockError::Failed(e)) => panic!("{e}"),
    }
    assert!(!segment.is_poisoned());
    read_only.read_at(0, &mut buf).unwrap();
    assert_eq!(&buf, b"repair");
}
