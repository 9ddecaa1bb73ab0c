//! Two processes exchange messages through a named segment, and say how fast.
//!
//! ```text
//! cargo run --release --example pingpong [-- --rounds N --bulk-rounds M --bulk-size BYTES]
//! ```
//!
//! The parent creates the segment `mmf-pingpong-<pid>` and re-launches this program as the
//! child. Then:
//!
//! 1. small messages: the parent writes a ping (sequence number and 32 payload bytes) in
//!    place through a write guard; the child reads it in place through a read guard and
//!    answers with a pong carrying the payload transformed; the parent checks every answer.
//! 2. bulk: 1 MiB payloads each way, copied with `write_at` / `read_at`, stamped and checked.
//!
//! # Taking turns without polling
//!
//! Each side must sleep until the other has answered. It does so with the segment's write
//! sequence: [`Mmf::write_seq`] before looking at the message, then, if it is not the answer
//! yet, [`Mmf::wait_for_write`], which sleeps in the kernel until the next write guard is
//! released (a futex on Linux, a semaphore on Windows) and costs the writer a wake-up only
//! while someone sleeps. Reading the sequence *before* the look is what makes it safe: an
//! answer written after the look has advanced the sequence, so the wait returns at once. No
//! spinning on a guard, no extra segments to pass turns.
//!
//! # Clean-up
//!
//! The parent created the segment, so it is removed when the parent drops it, also when it
//! fails. Ctrl-C kills both processes before anything is dropped: on Linux the name then
//! stays in `/dev/shm` (`rm /dev/shm/mmf-pingpong-*` removes it); on Windows it vanishes
//! with the processes. A peer that dies does not leave the other hanging: one that dies
//! mid-write is noticed by the survivor's wait (a poisoned-lock error), and every wait gives
//! up after 10 s in any case. Any error exits with a non-zero status.

use std::env;
use std::process::{Command, ExitCode};
use std::time::{Duration, Instant};

use mmf::{Mmf, MmfOptions, ReadGuard};

/// How long any wait for the other process may take before we call it dead.
const PATIENCE: Duration = Duration::from_secs(10);

/// Bytes before the payload: kind, payload length, sequence number, padding.
const HEADER: usize = 64;
/// Payload of a small message.
const SMALL: usize = 32;

// Message kinds, at offset 0 of the data region.
const READY: u32 = 1;
const PING: u32 = 2;
const PONG: u32 = 3;
const BULK_PING: u32 = 4;
const BULK_PONG: u32 = 5;
const STOP: u32 = 6;

type Result<T = ()> = std::result::Result<T, Box<dyn std::error::Error>>;

#[derive(Clone, Copy)]
struct Config {
    rounds: u64,
    bulk_rounds: u64,
    bulk_size: usize,
}

fn main() -> ExitCode {
    let args: Vec<String> = env::args().skip(1).collect();
    let result = match args.first().map(String::as_str) {
        Some("--child") => parse(&args[2..]).and_then(|config| child(&args[1], config)),
        Some("-h" | "--help") => {
            println!("usage: pingpong [--rounds N] [--bulk-rounds M] [--bulk-size BYTES]");
            return ExitCode::SUCCESS;
        }
        _ => parse(&args).and_then(parent),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("pingpong ({}): error: {e}", std::process::id());
            ExitCode::FAILURE
        }
    }
}

fn parse(args: &[String]) -> Result<Config> {
    let mut config = Config {
        rounds: 50_000,
        bulk_rounds: 500,
        bulk_size: 1 << 20,
    };
    let mut args = args.iter();
    while let Some(flag) = args.next() {
        let value = args.next().ok_or_else(|| format!("{flag} needs a value"))?;
        let number: u64 = value
            .parse()
            .map_err(|_| format!("{flag}: {value:?} is not a number"))?;
        match flag.as_str() {
            "--rounds" => config.rounds = number,
            "--bulk-rounds" => config.bulk_rounds = number,
            "--bulk-size" if (16..=u32::MAX as u64).contains(&number) => {
                config.bulk_size = number as usize
            }
            "--bulk-size" => return Err("--bulk-size must be 16 bytes to 4 GiB".into()),
            other => return Err(format!("unknown flag {other:?} (try --help)").into()),
        }
    }
    Ok(config)
}

fn options(name: &str) -> MmfOptions {
    MmfOptions::new(name).lock_timeout(Some(PATIENCE))
}

/// Sleeps until the message in the segment satisfies `wanted` (given its kind and sequence
/// number), and returns it under a read guard.
fn wait_until(data: &Mmf, wanted: impl Fn(u32, u64) -> bool) -> Result<ReadGuard<'_>> {
    loop {
        // Before the look: a message written after it advances the sequence, so the wait
        // below returns at once instead of sleeping through it.
        let seen = data.write_seq();
        let msg = data.read()?;
        let (kind, _, seq) = get_header(&msg);
        if wanted(kind, seq) {
            return Ok(msg);
        }
        drop(msg);
        data.wait_for_write(seen, Some(PATIENCE))?;
    }
}

/// Every message starts with: kind, payload length, sequence number.
fn put_header(buf: &mut [u8], kind: u32, len: usize, seq: u64) {
    buf[0..4].copy_from_slice(&kind.to_le_bytes());
    buf[4..8].copy_from_slice(&(len as u32).to_le_bytes());
    buf[8..16].copy_from_slice(&seq.to_le_bytes());
}

fn get_header(buf: &[u8]) -> (u32, usize, u64) {
    let mut kind = [0; 4];
    let mut len = [0; 4];
    let mut seq = [0; 8];
    kind.copy_from_slice(&buf[0..4]);
    len.copy_from_slice(&buf[4..8]);
    seq.copy_from_slice(&buf[8..16]);
    (
        u32::from_le_bytes(kind),
        u32::from_le_bytes(len) as usize,
        u64::from_le_bytes(seq),
    )
}

fn expect(what: &str, buf: &[u8], kind: u32, seq: u64) -> Result {
    let (k, _, s) = get_header(buf);
    if (k, s) != (kind, seq) {
        return Err(
            format!("{what}: expected kind {kind} seq {seq}, found kind {k} seq {s}").into(),
        );
    }
    Ok(())
}

/// The pong's payload: what the child does to a ping's payload, so the parent can check it.
fn answer(byte: u8) -> u8 {
    byte.wrapping_mul(3).wrapping_add(1)
}

/// Stamps a bulk payload with its sequence number at both ends and in the middle, so a
/// reader can tell a whole message from a torn or stale one.
fn stamp(payload: &mut [u8], seq: u64) {
    let n = payload.len();
    for at in [0, n / 2 - 8, n - 8] {
        payload[at..at + 8].copy_from_slice(&seq.to_le_bytes());
    }
}

fn check_stamp(what: &str, payload: &[u8], seq: u64) -> Result {
    let n = payload.len();
    for at in [0, n / 2 - 8, n - 8] {
        if payload[at..at + 8] != seq.to_le_bytes() {
            return Err(format!("{what} {seq}: payload torn or stale at byte {at}").into());
        }
    }
    Ok(())
}

fn parent(config: Config) -> Result {
    let name = format!("mmf-pingpong-{}", std::process::id());
    // Prefaulted: the first bulk messages should not pay for first-touch page faults.
    let data = options(&name)
        .prefault(true)
        .create(HEADER + config.bulk_size.max(SMALL))?;
    println!(
        "parent {}: created {name:?} ({} data bytes)",
        std::process::id(),
        data.len()
    );

    let mut child = Command::new(env::current_exe()?)
        .args(["--child", &name])
        .args(["--rounds", &config.rounds.to_string()])
        .args(["--bulk-rounds", &config.bulk_rounds.to_string()])
        .args(["--bulk-size", &config.bulk_size.to_string()])
        .spawn()?;
    let run = (|| -> Result<(Stats, Stats)> {
        drop(wait_until(&data, |kind, _| kind == READY)?);
        let small = ping_small(&data, config.rounds)?;
        let bulk = ping_bulk(&data, config)?;
        let mut guard = data.write()?;
        put_header(&mut guard, STOP, 0, 0);
        Ok((small, bulk))
    })();
    let (small, bulk) = match run {
        Ok(stats) => stats,
        Err(e) => {
            // It may be waiting for a message that will not come; ignore a failure to kill a
            // process that has already exited.
            let _ = child.kill();
            let _ = child.wait();
            return Err(e);
        }
    };
    let status = child.wait()?;
    if !status.success() {
        return Err(format!("child failed: {status}").into());
    }
    small.print(&format!("small messages ({} B)", HEADER + SMALL), None);
    bulk.print(
        &format!("bulk ({} B each way)", config.bulk_size),
        Some(2 * config.bulk_size),
    );
    Ok(())
}

/// Round-trip times of one phase.
struct Stats {
    rounds: u64,
    total: Duration,
    round_trips_ns: Vec<u64>,
}

impl Stats {
    fn new(rounds: u64) -> Self {
        Stats {
            rounds,
            total: Duration::ZERO,
            round_trips_ns: Vec::with_capacity(rounds as usize),
        }
    }

    fn print(mut self, what: &str, bytes_per_round: Option<usize>) {
        if self.rounds == 0 {
            println!("{what}: skipped");
            return;
        }
        self.round_trips_ns.sort_unstable();
        let at = |p: f64| {
            let i = ((self.round_trips_ns.len() - 1) as f64 * p).round() as usize;
            self.round_trips_ns[i] as f64 / 1e3
        };
        let secs = self.total.as_secs_f64();
        let mut line = format!(
            "{what}: {} round trips in {secs:.3} s = {:.0} round trips/s; round trip median {:.1} us, p99 {:.1} us",
            self.rounds,
            self.rounds as f64 / secs,
            at(0.5),
            at(0.99),
        );
        if let Some(bytes) = bytes_per_round {
            line += &format!(
                "; {:.0} MB/s moved",
                (bytes as u64 * self.rounds) as f64 / secs / 1e6
            );
        }
        println!("{line}");
    }
}

fn ping_small(data: &Mmf, rounds: u64) -> Result<Stats> {
    let mut stats = Stats::new(rounds);
    let phase = Instant::now();
    for seq in 0..rounds {
        let start = Instant::now();
        let payload: [u8; SMALL] = std::array::from_fn(|i| (seq as u8).wrapping_add(i as u8));
        {
            // Zero-copy: the message is built directly in the shared pages.
            let mut msg = data.write()?;
            put_header(&mut msg, PING, SMALL, seq);
            msg[HEADER..HEADER + SMALL].copy_from_slice(&payload);
        }
        let msg = wait_until(data, |kind, s| kind == PONG && s == seq)?;
        if msg[HEADER..HEADER + SMALL] != payload.map(answer) {
            return Err(format!("pong {seq}: wrong answer").into());
        }
        stats.round_trips_ns.push(start.elapsed().as_nanos() as u64);
    }
    stats.total = phase.elapsed();
    Ok(stats)
}

fn ping_bulk(data: &Mmf, config: Config) -> Result<Stats> {
    let mut stats = Stats::new(config.bulk_rounds);
    let mut out = vec![0u8; HEADER + config.bulk_size];
    let mut back = vec![0u8; HEADER + config.bulk_size];
    for (i, byte) in out[HEADER..].iter_mut().enumerate() {
        *byte = (i % 251) as u8;
    }
    let phase = Instant::now();
    for seq in 0..config.bulk_rounds {
        let start = Instant::now();
        put_header(&mut out, BULK_PING, config.bulk_size, seq);
        stamp(&mut out[HEADER..], seq);
        data.write_at(0, &out)?; // one copy in, under the write lock
        drop(wait_until(data, |kind, s| kind == BULK_PONG && s == seq)?);
        data.read_at(0, &mut back)?; // one copy out, under a read lock
        expect("bulk pong", &back, BULK_PONG, seq)?;
        check_stamp("bulk pong", &back[HEADER..], !seq)?;
        stats.round_trips_ns.push(start.elapsed().as_nanos() as u64);
    }
    stats.total = phase.elapsed();
    Ok(stats)
}

fn child(name: &str, config: Config) -> Result {
    let data = options(name).open()?;
    let mut ready = [0u8; HEADER];
    put_header(&mut ready, READY, 0, 0);
    data.write_at(0, &ready)?;

    let mut pongs = 0u64;
    let mut bulks = 0u64;
    let mut bulk_in = vec![0u8; HEADER + config.bulk_size];
    let mut bulk_out = vec![0u8; HEADER + config.bulk_size];
    loop {
        // Sleep until the parent's next message: the next ping, bulk ping or the stop.
        let msg = wait_until(&data, |kind, seq| match kind {
            PING => seq == pongs,
            BULK_PING => seq == bulks,
            STOP => true,
            _ => false,
        })?;
        let (kind, _, _) = get_header(&msg);
        drop(msg);
        match kind {
            PING => {
                let (seq, answered) = {
                    // Read in place under a shared lock; copy out only the 32 bytes we need.
                    let msg = data.read()?;
                    expect("ping", &msg, PING, pongs)?;
                    let ping: [u8; SMALL] = msg[HEADER..HEADER + SMALL].try_into()?;
                    (pongs, ping.map(answer))
                };
                let mut msg = data.write()?;
                put_header(&mut msg, PONG, SMALL, seq);
                msg[HEADER..HEADER + SMALL].copy_from_slice(&answered);
                pongs += 1;
            }
            BULK_PING => {
                data.read_at(0, &mut bulk_in)?;
                let (_, len, seq) = get_header(&bulk_in);
                if len != config.bulk_size {
                    return Err(format!("bulk ping {seq}: length {len}").into());
                }
                check_stamp("bulk ping", &bulk_in[HEADER..], seq)?;
                // Answer with a different stamp so a stale ping cannot pass for the pong.
                put_header(&mut bulk_out, BULK_PONG, config.bulk_size, seq);
                stamp(&mut bulk_out[HEADER..], !seq);
                data.write_at(0, &bulk_out)?;
                bulks += 1;
            }
            STOP => break,
            other => return Err(format!("unexpected message kind {other}").into()),
        }
    }
    let bulk = config.bulk_rounds;
    if pongs != config.rounds {
        return Err(format!("parent stopped after {pongs} of {} pings", config.rounds).into());
    }
    println!(
        "child {}: answered {pongs} pings and {bulk} bulk messages of {} B, each checked",
        std::process::id(),
        config.bulk_size
    );
    Ok(())
}
