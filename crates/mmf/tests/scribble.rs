//! Scribble: a hostile process writes random bytes over a segment's header while other
//! processes keep using the segment through the API, with timeouts everywhere.
//!
//! Under such input the lock may misbehave (two holders at once, say): that is the price of a
//! hostile peer. What must never happen in the users' processes is UB, a panic, a crash or a
//! wait past the configured timeouts — only results and typed errors. Each user process counts
//! its outcomes by kind, prints them, and exits 0 unless something took too long; the test
//! fails on any other exit (a panic exits 101, a crash by signal).
//!
//! The scribbler is this test process; the users are re-launched copies of this test binary.
#![cfg(target_os = "linux")]

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::os::unix::fs::FileExt;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use mmf::{LockError, LockResult, Mmf, MmfOptions};

const ROLE: &str = "MMF_SCRIBBLE_ROLE";
const SEGMENT: &str = "MMF_SCRIBBLE_SEGMENT";
const HEADER_LEN: usize = mmf::header::HEADER_LEN;
const DATA_LEN: usize = 64 << 10;

/// Scribbler writes, and how long they take at most (paced to ~3 s).
const WRITES: u32 = 20_000;
const SCRIBBLE_TIME: Duration = Duration::from_secs(3);
/// How long user processes keep going: the whole scribble, plus a little after it.
const USER_TIME: Duration = Duration::from_millis(3500);
/// Every lock and open timeout the users set.
const TIMEOUT: Duration = Duration::from_millis(20);
/// A call that takes longer than this has ignored its timeout (generous: the machine is busy).
const OVERLONG: Duration = Duration::from_secs(1);

fn unique_name() -> String {
    static COUNTER: AtomicU32 = AtomicU32::new(0);
    format!(
        "mmf-scribble-{}-{}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    )
}

/// xorshift64*: random enough for hostile bytes, and reproducible from the printed seed.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

fn seed() -> u64 {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64;
    (nanos ^ u64::from(std::process::id()) << 32) | 1
}

/// Tally of outcomes by kind: "ok" or the error variant's name.
#[derive(Default)]
struct Tally {
    counts: BTreeMap<String, u64>,
    overlong: u64,
    calls: u64,
}

impl Tally {
    /// Runs one API call, records its outcome and whether it overran its timeout.
    fn call<T>(&mut self, what: &str, f: impl FnOnce() -> mmf::Result<T>) -> Option<T> {
        self.timed(what, || match f() {
            Ok(value) => ("ok".to_owned(), Some(value)),
            Err(e) => (variant(&e), None),
        })
    }

    /// Like `call` for a lock acquisition: a poisoned one still hands over the guard.
    fn lock<G>(&mut self, what: &str, f: impl FnOnce() -> LockResult<G>) -> Option<G> {
        self.timed(what, || match f() {
            Ok(guard) => ("ok".to_owned(), Some(guard)),
            Err(LockError::Poisoned(poisoned)) => {
                ("Poisoned".to_owned(), Some(poisoned.into_inner()))
            }
            Err(LockError::Failed(e)) => (variant(&e), None),
        })
    }

    fn timed<T>(&mut self, what: &str, f: impl FnOnce() -> (String, Option<T>)) -> Option<T> {
        let start = Instant::now();
        let (kind, value) = f();
        let took = start.elapsed();
        self.calls += 1;
        if took > OVERLONG {
            eprintln!("{what} took {took:?}");
            self.overlong += 1;
        }
        *self.counts.entry(kind).or_default() += 1;
        value
    }

    fn report(&self, role: &str) -> String {
        let kinds: Vec<String> = self
            .counts
            .iter()
            .map(|(k, n)| format!("{k}:{n}"))
            .collect();
        format!(
            "scribble-report role={role} calls={} overlong={} kinds={}",
            self.calls,
            self.overlong,
            kinds.join(",")
        )
    }
}

/// The variant name of `e`, whatever the variant (the enum is non_exhaustive).
fn variant(e: &mmf::Error) -> String {
    format!("{e:?}")
        .split([' ', '{', '('])
        .next()
        .unwrap_or_default()
        .to_owned()
}

/// A user that keeps one read-write handle and locks it every way the API offers.
fn locker(name: &str) -> Tally {
    let mut tally = Tally::default();
    let Some(seg) = tally.call("open", || {
        MmfOptions::new(name)
            .lock_timeout(Some(TIMEOUT))
            .open_timeout(TIMEOUT)
            .open()
    }) else {
        return tally;
    };
    let mut buf = vec![0u8; 4096];
    let start = Instant::now();
    let mut i = 0u64;
    while start.elapsed() < USER_TIME {
        i += 1;
        match i % 6 {
            0 => {
                tally.call("write_at", || seg.write_at(1000, &buf));
            }
            1 => {
                tally.call("read_at", || seg.read_at(DATA_LEN - 4096, &mut buf));
            }
            2 => {
                if let Some(mut guard) = tally.lock("write_timeout", || seg.write_timeout(TIMEOUT))
                {
                    // The slice length is this handle's, fixed at open: the header's (now
                    // possibly hostile) size field must not leak into it.
                    assert_eq!(guard.len(), seg.len());
                    let last = guard.len() - 1;
                    guard[0] = guard[last].wrapping_add(1);
                }
            }
            3 => {
                if let Some(guard) = tally.lock("read_timeout", || seg.read_timeout(TIMEOUT)) {
                    assert_eq!(guard.len(), seg.len());
                    std::hint::black_box(guard[guard.len() - 1]);
                }
            }
            4 => {
                tally.lock("try_write", || seg.try_write());
            }
            _ => {
                tally.lock("read", || seg.read());
            }
        }
    }
    tally
}

/// A user that opens the segment afresh again and again (read-write and read-only), so every
/// header check at open meets hostile bytes.
fn opener(name: &str) -> Tally {
    let mut tally = Tally::default();
    let mut buf = vec![0u8; 512];
    let start = Instant::now();
    let mut read_only = false;
    while start.elapsed() < USER_TIME {
        read_only = !read_only;
        let options = MmfOptions::new(name)
            .lock_timeout(Some(TIMEOUT))
            .open_timeout(TIMEOUT);
        let opened = if read_only {
            tally.call("open_read_only", || options.open_read_only())
        } else {
            tally.call("open", || options.open())
        };
        if let Some(seg) = opened {
            let offset = seg.len().saturating_sub(buf.len());
            let len = buf.len().min(seg.len());
            tally.call("read_at", || seg.read_at(offset, &mut buf[..len]));
            if !read_only {
                tally.call("write_at", || seg.write_at(0, &buf[..len]));
            }
        }
    }
    tally
}

fn spawn_user(role: &str, name: &str) -> Child {
    Command::new(std::env::current_exe().unwrap())
        .args([
            "random_header_bytes_give_only_typed_errors_and_bounded_waits",
            "--exact",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(ROLE, role)
        .env(SEGMENT, name)
        .stdout(Stdio::piped())
        .spawn()
        .expect("spawn user")
}

#[test]
fn random_header_bytes_give_only_typed_errors_and_bounded_waits() {
    if let (Ok(role), Ok(name)) = (std::env::var(ROLE), std::env::var(SEGMENT)) {
        let tally = match role.as_str() {
            "locker" => locker(&name),
            _ => opener(&name),
        };
        println!("{}", tally.report(&role));
        std::process::exit(if tally.overlong == 0 { 0 } else { 1 });
    }

    let name = unique_name();
    let _segment = Mmf::create(&name, DATA_LEN).unwrap();
    let shm = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(format!("/dev/shm/{name}"))
        .unwrap();
    let mut pristine = vec![0u8; HEADER_LEN];
    shm.read_exact_at(&mut pristine, 0).unwrap();

    let mut users: Vec<Child> = ["locker", "locker", "opener", "opener"]
        .iter()
        .map(|role| spawn_user(role, &name))
        .collect();
    // Let the lockers open the intact segment before the scribbling starts.
    std::thread::sleep(Duration::from_millis(100));

    let seed = seed();
    println!("scribble seed {seed:#x}");
    let mut rng = Rng(seed);
    let mut counts = [0u32; 5];
    let start = Instant::now();
    for i in 0..WRITES {
        let choice = rng.below(100);
        let slot = match choice {
            // One random word among the fields and the first lock words.
            0..=39 => {
                let offset = rng.below(32) * 4;
                shm.write_all_at(&(rng.next() as u32).to_ne_bytes(), offset)
                    .unwrap();
                0
            }
            // One random word anywhere in the header.
            40..=59 => {
                let offset = rng.below(HEADER_LEN as u64 / 4) * 4;
                shm.write_all_at(&(rng.next() as u32).to_ne_bytes(), offset)
                    .unwrap();
                1
            }
            // All 4096 bytes random.
            60..=69 => {
                let bytes: Vec<u8> = (0..HEADER_LEN).map(|_| rng.next() as u8).collect();
                shm.write_all_at(&bytes, 0).unwrap();
                2
            }
            // The pristine header with one field flipped (mostly valid, so opens get far).
            70..=79 => {
                let mut bytes = pristine.clone();
                let at = rng.below(64) as usize;
                bytes[at] ^= 1 << rng.below(8);
                shm.write_all_at(&bytes, 0).unwrap();
                3
            }
            // The pristine header back, so that locking and opening work in between.
            _ => {
                shm.write_all_at(&pristine, 0).unwrap();
                4
            }
        };
        counts[slot] += 1;
        // Paced so the writes spread over SCRIBBLE_TIME.
        let due = SCRIBBLE_TIME * (i + 1) / WRITES;
        if let Some(wait) = due.checked_sub(start.elapsed()) {
            std::thread::sleep(wait);
        }
    }
    let scribble_time = start.elapsed();
    println!(
        "scribbled {WRITES} writes in {scribble_time:?}: word-in-fields {}, word-anywhere {}, \
         whole-header {}, flipped-bit {}, pristine {}",
        counts[0], counts[1], counts[2], counts[3], counts[4]
    );

    let mut failures = Vec::new();
    for (i, user) in users.iter_mut().enumerate() {
        let stdout = user.stdout.take().unwrap();
        let deadline = Instant::now() + Duration::from_secs(30);
        let status = loop {
            if let Some(status) = user.try_wait().unwrap() {
                break Some(status);
            }
            if Instant::now() > deadline {
                let _ = user.kill();
                break None;
            }
            std::thread::sleep(Duration::from_millis(10));
        };
        let report = BufReader::new(stdout)
            .lines()
            .map_while(Result::ok)
            .find_map(|line| line.find("scribble-report").map(|at| line[at..].to_owned()));
        println!("user {i}: {status:?} {report:?}");
        match (status, report) {
            (Some(status), Some(report)) if status.success() => {
                let calls: u64 = report
                    .split_whitespace()
                    .find_map(|kv| kv.strip_prefix("calls="))
                    .and_then(|n| n.parse().ok())
                    .unwrap_or(0);
                if calls < 100 {
                    failures.push(format!("user {i} made only {calls} calls: {report}"));
                }
            }
            (status, report) => failures.push(format!("user {i}: {status:?} {report:?}")),
        }
    }
    assert!(failures.is_empty(), "{failures:#?}");
}
