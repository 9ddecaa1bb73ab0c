//! Owner-death recovery and poisoning with real processes (issue 4).
//!
//! The kill loop: a child process opens a segment and is killed (`Child::kill`: SIGKILL on
//! Linux, TerminateProcess on Windows) at a planned stage: before it asks for the lock; while
//! it asks, blocked behind a lock the parent holds and seen asleep in the lock's words; while
//! it holds a read lock or the write lock; in the middle of scribbling over the data under the
//! write lock; or after it released its lock. Every stage comes a fixed number of times, in an
//! order shuffled by a printed seed, and the count of each is asserted. The parent must then
//! get the write lock within one recovery interval of the child's death (as the OS reports
//! it) plus a stated scheduling slack, and the lock must be poisoned exactly when a writer
//! died holding it. Half of the
//! killed children are reaped before the check and half are left as zombies until after it.
//! The worst recovery time seen is printed.

mod common;

use std::io::{BufRead, BufReader, Write};
use std::process::{ChildStdin, Stdio};
use std::sync::atomic::AtomicU32;
use std::sync::atomic::Ordering::SeqCst;
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use common::{Rng, CHILD_TIMEOUT, ROLE_VAR};
use mmf::header::LOCK_AREA_OFFSET;
use mmf::lock::{DRAINING, LOCK_AREA_WORDS, OWNER, PARKED, WRITER};
use mmf::{Error, LockError, Mmf, MmfOptions};

/// The parent's recovery interval in the timed tests (the default is 50 ms): how long it
/// waits at most before it asks the OS whether a holder it waits for is still alive.
const INTERVAL: Duration = Duration::from_millis(200);

/// How much later than one [`INTERVAL`] after the child's death the parent may get the lock:
/// its timed sleep ending late and its getting a CPU, on a loaded 2-core machine (seen: at
/// most 40 ms late with three busy loops running beside the usual builds, but once 250 ms late
/// while loom and three test builds ran beside it); under wine, a much slower everything. On
/// Linux the bound is 3.25 intervals, so a recovery check that comes 6 times too seldom (1.2 s)
/// still fails it by a wide margin.
fn slack() -> Duration {
    if cfg!(windows) {
        Duration::from_millis(1500)
    } else {
        Duration::from_millis(450)
    }
}

/// The promise of `mmf::lock` ("Owner death"): a killed holder unblocks the others at most
/// one recovery interval (plus scheduling) after its death.
fn bound() -> Duration {
    INTERVAL + slack()
}

/// How many times the kill loop plays each [`Stage`]: `MMF_KILL_ROUNDS` if set (an even
/// number; 112 rounds of the 9 stages is the 1008-iteration run quoted in the docs), else 10,
/// or 4 under wine, where every process start is slower.
fn rounds() -> u32 {
    match std::env::var("MMF_KILL_ROUNDS") {
        Ok(n) => n.parse().expect("MMF_KILL_ROUNDS: a number"),
        Err(_) if cfg!(windows) => 4,
        Err(_) => 10,
    }
}

/// The kill loop's recovery interval: `MMF_KILL_INTERVAL_MS` if set (50 is the library's
/// default, for the long run in the docs), else [`INTERVAL`].
fn kill_interval() -> Duration {
    std::env::var("MMF_KILL_INTERVAL_MS").map_or(INTERVAL, |ms| {
        Duration::from_millis(ms.parse().expect("MMF_KILL_INTERVAL_MS: milliseconds"))
    })
}

#[test]
#[ignore = "not a test: the entry point of this file's child processes, which run it with --include-ignored"]
fn child() {
    common::child_main(|role| match role {
        "hold" => hold_role(),
        other => panic!("unknown role {other}"),
    });
}

/// Child: open the segment and say "ready"; wait for "go" from the parent; say "locking",
/// take the lock the parent asked for, say "locked"; then (as asked) scribble over the data
/// forever (saying "scribbling" after the first pass), or release and say "released", or just
/// wait to be killed.
fn hold_role() {
    let segment = Mmf::open(&common::arg("name")).expect("open the segment");
    let mode = common::arg("mode");
    let release = common::arg("release") == "1";
    let mut rng = Rng::new(common::arg_u64("seed"));
    common::say("ready", 1);
    // Killed here when the parent never sends "go".
    let command = common::command();
    assert_eq!(command.as_deref(), Some("go"), "unexpected command");
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
                rng.fill(&mut guard[..]);
                common::say("scribbling", 1);
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

/// Word `index` of `segment`'s lock area: for the default lock, 0 is the lock word and 1 the
/// drain word (`mmf::lock`, "The default lock's area"). Read only, to see where a child is.
fn lock_area_word(segment: &Mmf, index: usize) -> &AtomicU32 {
    assert!(index < LOCK_AREA_WORDS);
    let word = segment
        .mapping_ptr_for_tests()
        .wrapping_add(LOCK_AREA_OFFSET + 4 * index);
    // The lock area sits at LOCK_AREA_OFFSET, a multiple of 64 from the page-aligned mapping
    // start, so `word` is 4-aligned.
    // SAFETY: the header stays mapped read-write while `segment` lives (the borrow is tied to
    // it), and the library accesses these words only as AtomicU32, as we do.
    unsafe { &*word.cast::<AtomicU32>() }
}

/// Waits (up to [`CHILD_TIMEOUT`]) until `word` holds a value `ready` accepts.
fn wait_for_word(word: &AtomicU32, ready: impl Fn(u32) -> bool, what: &str) {
    let start = Instant::now();
    while !ready(word.load(SeqCst)) {
        assert!(
            start.elapsed() < CHILD_TIMEOUT,
            "{what}: not seen within {CHILD_TIMEOUT:?} (word {:#x})",
            word.load(SeqCst)
        );
        thread::sleep(Duration::from_micros(200));
    }
}

/// A killable child with its stdout lines arriving on a channel.
struct Victim {
    proc: std::process::Child,
    stdin: Option<ChildStdin>,
    lines: mpsc::Receiver<String>,
    seen: Vec<String>,
    reader: Option<thread::JoinHandle<()>>,
}

impl Victim {
    /// Starts a "hold" child; it opens the segment, says "ready" and waits for [`go`].
    ///
    /// [`go`]: Self::go
    fn spawn(name: &str, mode: &str, release: bool, seed: u64) -> Self {
        let mut cmd = common::self_command(&[]);
        cmd.args([
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
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit());
        let mut proc = common::spawn(&mut cmd, "hold");
        let stdin = proc.stdin.take();
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
            stdin,
            lines,
            seen: Vec::new(),
            reader: Some(reader),
        }
    }

    /// Lets the child go on from "ready" to asking for its lock.
    fn go(&mut self) {
        let stdin = self.stdin.as_mut().expect("stdin open");
        writeln!(stdin, "go")
            .and_then(|()| stdin.flush())
            .expect("tell the child to go");
    }

    fn said(&self, key: &str) -> bool {
        let mark = format!("{}{key} ", common::MARK);
        // `contains`: the harness prints "test child ... " without a newline before the first.
        self.seen.iter().any(|l| l.contains(&mark))
    }

    /// Waits up to [`CHILD_TIMEOUT`] for the child to say `key`; fails the test otherwise.
    fn wait_for(&mut self, key: &str) {
        let deadline = Instant::now() + CHILD_TIMEOUT;
        while !self.said(key) {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) => self.seen.push(line),
                Err(_) => panic!("the child never said {key:?}; it said {:?}", self.seen),
            }
        }
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

    /// Waits until the OS reports the killed child dead, without reaping it: on Linux until
    /// it is a zombie (by then the kernel has closed its descriptors, releasing the byte locks
    /// the lock's liveness check asks about), on Windows until its process object is
    /// signalled. This is the death that the recovery promise counts from.
    fn wait_until_dead(&mut self) {
        #[cfg(target_os = "linux")]
        {
            let mut info = std::mem::MaybeUninit::<libc::siginfo_t>::zeroed();
            let pid = self.proc.id() as libc::id_t;
            // SAFETY: `info` is a valid place for one siginfo_t; WNOWAIT leaves the child
            // waitable, so std's later `wait` (reap) still finds it.
            let rc = unsafe {
                libc::waitid(
                    libc::P_PID,
                    pid,
                    info.as_mut_ptr(),
                    libc::WEXITED | libc::WNOWAIT,
                )
            };
            assert_eq!(rc, 0, "waitid: {}", std::io::Error::last_os_error());
        }
        #[cfg(windows)]
        {
            // Only reads the exit status (there are no zombies to keep): a later `wait` works.
            while self.proc.try_wait().expect("the child's status").is_none() {
                thread::sleep(Duration::from_millis(1));
            }
        }
    }
}

impl Drop for Victim {
    fn drop(&mut self) {
        // Ignored: it is normally dead already; this only cleans up after a failed assertion.
        let _ = self.proc.kill();
        let _ = self.proc.wait();
    }
}

/// When the kill loop kills its child.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Stage {
    /// It has opened the segment (so it has a handle slot) and not yet asked for a lock.
    BeforeAsking,
    /// It asks for a read lock (`writes`: the write lock) while the parent holds the write
    /// lock, and sleeps on the lock word, having set `PARKED`.
    AskingBehindWriter { writes: bool },
    /// It asks for the write lock while the parent holds a read lock: it has set `WRITER` and
    /// `DRAINING` and sleeps on the drain word.
    AskingBehindReader,
    /// It holds a read lock (`writes`: the write lock).
    Holding { writes: bool },
    /// It holds the write lock and is overwriting the data with random bytes.
    Scribbling,
    /// It took a read lock (`writes`: the write lock) and released it.
    Released { writes: bool },
}

const STAGES: [Stage; 9] = [
    Stage::BeforeAsking,
    Stage::AskingBehindWriter { writes: false },
    Stage::AskingBehindWriter { writes: true },
    Stage::AskingBehindReader,
    Stage::Holding { writes: false },
    Stage::Holding { writes: true },
    Stage::Scribbling,
    Stage::Released { writes: false },
    Stage::Released { writes: true },
];

impl Stage {
    /// The child's lock mode.
    fn mode(self) -> &'static str {
        match self {
            Stage::Scribbling => "scribble",
            Stage::AskingBehindReader => "write",
            Stage::AskingBehindWriter { writes }
            | Stage::Holding { writes }
            | Stage::Released { writes } => {
                if writes {
                    "write"
                } else {
                    "read"
                }
            }
            Stage::BeforeAsking => "read",
        }
    }

    /// Whether the child's death must poison the lock: exactly when it held the write lock
    /// (a writer still waiting for readers to leave has written nothing).
    fn poisons(self) -> bool {
        matches!(self, Stage::Holding { writes: true } | Stage::Scribbling)
    }

    /// What the child must have said before it was killed, and what it must not have.
    fn said(self) -> (&'static str, Option<&'static str>) {
        match self {
            Stage::BeforeAsking => ("ready", Some("locking")),
            Stage::AskingBehindWriter { .. } | Stage::AskingBehindReader => {
                ("locking", Some("locked"))
            }
            Stage::Holding { .. } => ("locked", Some("released")),
            Stage::Scribbling => ("scribbling", None),
            Stage::Released { .. } => ("released", None),
        }
    }
}

#[test]
fn processes_killed_at_every_stage_are_recovered_within_one_interval_and_poison_exactly_when_writing(
) {
    let name = common::unique_name("robust-kill");
    let interval = kill_interval();
    let segment = MmfOptions::new(&name)
        .recovery_interval(interval)
        .create(64 * 1024)
        .unwrap();
    let (lock_word, drain_word) = (lock_area_word(&segment, 0), lock_area_word(&segment, 1));
    let bound = interval + slack();
    let seed = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(1, |d| d.as_nanos() as u64);
    println!("kill loop seed {seed}");
    let mut rng = Rng::new(seed);
    // Every stage `rounds()` times, reaped first in every other round; shuffled.
    let mut plan: Vec<(Stage, bool)> = (0..rounds())
        .flat_map(|round| STAGES.map(|stage| (stage, round % 2 == 0)))
        .collect();
    for i in (1..plan.len()).rev() {
        plan.swap(i, rng.below(i as u64 + 1) as usize);
    }
    let mut done = [0u32; STAGES.len()];
    let (mut zombies, mut poisoned_count) = (0, 0);
    let mut worst_kill = Duration::ZERO;
    let mut recoveries = Vec::with_capacity(plan.len());
    for (i, &(stage, reap_first)) in plan.iter().enumerate() {
        assert_eq!(
            (lock_word.load(SeqCst), drain_word.load(SeqCst)),
            (0, 0),
            "iteration {i}: the lock is not free and clean at the start"
        );
        let mut victim = Victim::spawn(
            &name,
            stage.mode(),
            matches!(stage, Stage::Released { .. }),
            rng.next_u64(),
        );
        victim.wait_for("ready");
        let (mut parent_read, mut parent_write) = (None, None);
        match stage {
            Stage::BeforeAsking => {}
            Stage::AskingBehindWriter { .. } => {
                parent_write = Some(segment.write().expect("the lock is clean"));
                victim.go();
                victim.wait_for("locking");
                // Only the child can set PARKED: the parent holds the lock and waits for nothing.
                wait_for_word(
                    lock_word,
                    |w| w & PARKED != 0,
                    "the child asleep behind the parent's write lock",
                );
            }
            Stage::AskingBehindReader => {
                parent_read = Some(segment.read().expect("the lock is clean"));
                victim.go();
                victim.wait_for("locking");
                wait_for_word(
                    drain_word,
                    |d| d == 1,
                    "the child asleep waiting for the parent's read lock to go",
                );
                let w = lock_word.load(SeqCst);
                assert_eq!(w & (WRITER | DRAINING), WRITER | DRAINING, "{w:#x}");
                assert_ne!(w & OWNER, OWNER, "the child's writer is tracked");
            }
            Stage::Holding { .. } => {
                victim.go();
                victim.wait_for("locked");
            }
            Stage::Scribbling => {
                victim.go();
                victim.wait_for("scribbling");
            }
            Stage::Released { .. } => {
                victim.go();
                victim.wait_for("released");
            }
        }
        // Where exactly in its stage: a few milliseconds in, at random.
        thread::sleep(Duration::from_micros(rng.below(5_000)));
        let killed = Instant::now();
        victim.kill();
        victim.wait_until_dead();
        let dead = Instant::now();
        worst_kill = worst_kill.max(dead - killed);
        let (must, must_not) = stage.said();
        assert!(
            victim.said(must) && !must_not.is_some_and(|key| victim.said(key)),
            "iteration {i} ({stage:?}): killed at another stage; the child said {:?}",
            victim.seen
        );
        if reap_first {
            victim.reap();
        } else {
            zombies += 1;
        }
        drop(parent_read);
        drop(parent_write);
        let (poisoned, mut guard) = match segment.write_timeout(bound) {
            Ok(guard) => (false, guard),
            Err(LockError::Poisoned(guard)) => (true, guard.into_inner()),
            Err(LockError::Failed(e)) => panic!(
                "iteration {i} ({stage:?}): no write lock within {bound:?} of the death: {e}; \
                 the child said {:?}",
                victim.seen
            ),
        };
        let recovery = dead.elapsed();
        assert!(
            recovery < bound,
            "iteration {i} ({stage:?}): recovery took {recovery:?}, bound {bound:?}"
        );
        assert_eq!(
            poisoned,
            stage.poisons(),
            "iteration {i} ({stage:?}): poisoned {poisoned}"
        );
        if stage == Stage::Scribbling {
            assert!(
                guard.iter().any(|&b| b != 0),
                "iteration {i}: the scribbler wrote nothing"
            );
            guard.fill(0);
        }
        drop(guard);
        assert_eq!(segment.is_poisoned(), poisoned);
        if poisoned {
            poisoned_count += 1;
            segment.clear_poison().unwrap();
            // The copy API refuses a poisoned lock; after clearing it works again.
            segment.write_at(0, &[0; 16]).unwrap();
        }
        if !reap_first {
            victim.reap();
        }
        done[STAGES.iter().position(|&s| s == stage).unwrap()] += 1;
        recoveries.push(recovery);
    }
    let counts: Vec<_> = STAGES.iter().zip(done).collect();
    recoveries.sort();
    let at = |q: usize| recoveries[(recoveries.len() - 1) * q / 100];
    println!(
        "kill loop: {} iterations, recovery interval {interval:?}; recovery after a death: \
         median {:?}, p99 {:?}, worst {:?} (bound {bound:?}); worst kill {worst_kill:?}; \
         {zombies} zombies, {poisoned_count} poisoned; per stage {counts:?}",
        plan.len(),
        at(50),
        at(99),
        at(100),
    );
    assert!(
        done.iter().all(|&n| n == rounds()),
        "each stage {} times: {counts:?}",
        rounds()
    );
    assert_eq!(zombies, STAGES.len() as u32 * (rounds() / 2));
    assert_eq!(poisoned_count, 2 * rounds());
}

/// A writer killed while it waits for a reader to leave has set the writer bit, so new
/// readers hold back, but it has written nothing: its claim is taken back without poisoning,
/// within one recovery interval plus slack.
#[test]
fn a_writer_killed_while_waiting_for_readers_does_not_poison() {
    let name = common::unique_name("robust-drain");
    let segment = MmfOptions::new(&name)
        .recovery_interval(INTERVAL)
        .create(4096)
        .unwrap();
    let read_guard = segment.read().unwrap();
    let mut victim = Victim::spawn(&name, "write", false, 1);
    victim.wait_for("ready");
    victim.go();
    victim.wait_for("locking");
    // Asleep waiting for our read lock to go: it has claimed the lock (WRITER, DRAINING).
    wait_for_word(
        lock_area_word(&segment, 1),
        |d| d == 1,
        "the writer asleep waiting for readers",
    );
    let claim = lock_area_word(&segment, 0).load(SeqCst);
    assert_eq!(claim & (WRITER | DRAINING), WRITER | DRAINING, "{claim:#x}");
    assert!(
        matches!(
            segment.try_read(),
            Err(LockError::Failed(Error::WouldBlock))
        ),
        "a new reader got past a waiting writer"
    );
    victim.kill();
    victim.reap();
    let dead = Instant::now();
    assert!(!victim.said("locked"), "the writer got in past a read lock");
    drop(read_guard);
    let bound = bound();
    match segment.write_timeout(bound) {
        Ok(guard) => drop(guard),
        Err(LockError::Poisoned(_)) => panic!("a writer that never got in poisoned the lock"),
        Err(LockError::Failed(e)) => panic!("no write lock within {bound:?}: {e}"),
    }
    let recovery = dead.elapsed();
    assert!(recovery < bound, "recovered {recovery:?} after the death");
    assert!(!segment.is_poisoned());
}

/// A read-only handle cannot take the lock, so it copies optimistically and retries while
/// a write is in progress. When the writer is killed in the middle of a write, with nobody
/// holding write access to recover the lock, the read-only reader must not wait for that
/// write forever: it returns `Error::Poisoned` within two recovery intervals of the death.
#[test]
fn read_only_reader_returns_soon_after_a_writer_is_killed_mid_write() {
    let name = common::unique_name("robust-ro");
    let creator = MmfOptions::new(&name).create(4096).unwrap();
    let mut victim = Victim::spawn(&name, "scribble", false, 7);
    // The creator's handle never locks anything; it only keeps the segment alive. Drop it so
    // that no read-write handle is left to recover the lock.
    victim.wait_for("ready");
    victim.go();
    victim.wait_for("scribbling");
    let reader = MmfOptions::new(&name)
        .recovery_interval(INTERVAL)
        .lock_timeout(Some(Duration::from_secs(30)))
        .open_read_only()
        .unwrap();
    drop(creator);
    let waiting = thread::spawn(move || {
        let mut buf = vec![0u8; 4096];
        let result = reader.read_at(0, &mut buf);
        (result, Instant::now())
    });
    // The reader is retrying: the write never ends while the child scribbles.
    thread::sleep(INTERVAL / 2);
    assert!(
        !waiting.is_finished(),
        "read a snapshot in the middle of a write"
    );
    victim.kill();
    victim.wait_until_dead();
    let dead = Instant::now();
    let (result, returned) = waiting.join().unwrap();
    let after = returned.saturating_duration_since(dead);
    let bound = 2 * INTERVAL
        + if cfg!(windows) {
            slack()
        } else {
            Duration::ZERO
        };
    println!("read-only reader returned {after:?} after the writer's death (bound {bound:?})");
    assert!(
        matches!(result, Err(Error::Poisoned)),
        "expected Error::Poisoned, got {result:?}"
    );
    assert!(after <= bound, "returned {after:?} after the death");
    victim.reap();
}

/// The copy API on a poisoned lock: nothing is copied (the caller's buffer and the data are
/// left as they were), `Error::Poisoned`, on read-write and read-only handles alike; `?` on
/// a guard method gives the same error.
#[test]
fn copy_api_refuses_a_poisoned_lock_until_cleared() {
    let name = common::unique_name("robust-copy");
    let segment = Mmf::create(&name, 4096).unwrap();
    segment.write_at(0, b"before").unwrap();
    let mut victim = Victim::spawn(&name, "scribble", false, 7);
    victim.wait_for("ready");
    victim.go();
    victim.wait_for("scribbling");
    victim.kill();
    victim.reap();
    let read_only = Mmf::open_read_only(&name).unwrap();
    // What the dead writer left, seen through the guard a poisoned lock still hands over
    // (this first acquisition recovers the dead writer's lock).
    let left_behind = |what: &str| match segment.read() {
        Err(LockError::Poisoned(poisoned)) => poisoned.into_inner().to_vec(),
        Ok(_) => panic!("{what}: the lock should be poisoned"),
        Err(LockError::Failed(e)) => panic!("{what}: {e}"),
    };
    let scribbled = left_behind("after the kill");
    assert_ne!(
        &scribbled[..6],
        b"before",
        "the child scribbled over the data"
    );
    assert!(segment.is_poisoned() && read_only.is_poisoned());
    // A buffer no copy of the data could leave as it is (the data is random).
    const UNTOUCHED: [u8; 64] = [0xA5; 64];
    let mut buf = UNTOUCHED;
    assert!(matches!(segment.read_at(0, &mut buf), Err(Error::Poisoned)));
    assert_eq!(buf, UNTOUCHED, "a refused read_at copied into the buffer");
    assert!(matches!(
        read_only.read_at(0, &mut buf),
        Err(Error::Poisoned)
    ));
    assert_eq!(
        buf, UNTOUCHED,
        "a refused read-only read_at copied into the buffer"
    );
    assert!(matches!(segment.read_to_vec(0, 64), Err(Error::Poisoned)));
    assert!(matches!(
        segment.write_at(0, b"after!"),
        Err(Error::Poisoned)
    ));
    assert_eq!(
        left_behind("after the refused write"),
        scribbled,
        "a refused write_at changed the data"
    );
    let via_question_mark = || -> mmf::Result<()> {
        drop(segment.read()?);
        Ok(())
    };
    assert!(matches!(via_question_mark(), Err(Error::Poisoned)));
    // Typed views carry the poison the same way, with the typed view inside.
    match segment.view::<[u8; 6]>() {
        Err(LockError::Poisoned(poisoned)) => {
            assert_eq!(&poisoned.into_inner()[..], &scribbled[..6])
        }
        Ok(_) => panic!("a view of a poisoned lock came clean"),
        Err(LockError::Failed(e)) => panic!("{e}"),
    }
    let via_view = || -> mmf::Result<u64> { Ok(*segment.view_mut::<u64>()?) };
    assert!(matches!(via_view(), Err(Error::Poisoned)));
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
    let mut buf = [0; 6];
    read_only.read_at(0, &mut buf).unwrap();
    assert_eq!(&buf, b"repair");
    segment.read_at(0, &mut buf).unwrap();
    assert_eq!(&buf, b"repair");
}
