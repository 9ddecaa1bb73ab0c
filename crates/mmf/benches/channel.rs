//! Frame channel benchmarks, each next to its baseline measured in the same run.
//!
//! ```text
//! cargo bench -p mmf --bench channel
//! ```
//!
//! Cross-process figures need a second process and per-event latencies, which criterion's
//! in-process model does not give, so this is a plain harness that re-launches itself as the
//! other process (selected by `MMF_BENCH_ROLE`) and prints medians (p50), p99 where
//! meaningful, and every figure's ratio to its baseline. Linux only (futex and Unix-socket
//! baselines); elsewhere it prints a note and exits.

#[cfg(target_os = "linux")]
fn main() {
    linux::main();
}

#[cfg(not(target_os = "linux"))]
fn main() {
    eprintln!("the channel benchmarks run on Linux only");
}

#[cfg(target_os = "linux")]
mod linux {
    use std::io::{Read, Write};
    use std::os::unix::net::{UnixListener, UnixStream};
    use std::process::{Child, Command, Stdio};
    use std::ptr::NonNull;
    use std::sync::atomic::{AtomicU32, AtomicU64, Ordering::SeqCst};
    use std::time::{Duration, Instant};

    use mmf::channel::monotonic_ns;
    use mmf::{FrameMeta, FrameReader, FrameSpec, FrameWriter};
    use rustix::fs::Mode;
    use rustix::mm::{self, MapFlags, ProtFlags};
    use rustix::shm;
    use rustix::thread::futex;

    const ROLE: &str = "MMF_BENCH_ROLE";
    const NAME: &str = "MMF_BENCH_NAME";
    const FRAME_1080P: usize = 1920 * 1080 * 3; // 6,220,800 bytes
    const ROUND_TRIPS_PER_BATCH: u64 = 2000;
    const BATCHES: usize = 100;

    fn name(tag: &str) -> String {
        static COUNTER: AtomicU32 = AtomicU32::new(0);
        format!(
            "mmfb-{tag}-{}-{}",
            std::process::id(),
            COUNTER.fetch_add(1, SeqCst)
        )
    }

    fn spawn(role: &str, name: &str) -> Child {
        Command::new(std::env::current_exe().unwrap())
            .env(ROLE, role)
            .env(NAME, name)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap()
    }

    /// Waits for the child's `key value` line. Reads byte by byte: a buffered reader dropped
    /// between calls would lose lines it had read ahead.
    fn expect(child: &mut Child, key: &str) -> String {
        let out = child.stdout.as_mut().unwrap();
        loop {
            let mut line = Vec::new();
            let mut byte = [0u8; 1];
            loop {
                assert_eq!(out.read(&mut byte).unwrap(), 1, "child exited before {key}");
                if byte[0] == b'\n' {
                    break;
                }
                line.push(byte[0]);
            }
            let line = String::from_utf8(line).unwrap();
            if let Some(v) = line.strip_prefix(key) {
                return v.trim().to_owned();
            }
        }
    }

    fn say(key: &str, value: impl std::fmt::Display) {
        let mut out = std::io::stdout().lock();
        writeln!(out, "{key} {value}").unwrap();
        out.flush().unwrap();
    }

    fn pct(sorted: &[f64], p: f64) -> f64 {
        sorted[((sorted.len() - 1) as f64 * p).round() as usize]
    }

    fn sorted(mut v: Vec<f64>) -> Vec<f64> {
        v.sort_by(f64::total_cmp);
        v
    }

    fn line(what: &str, value: f64, unit: &str, baseline: &str, base: f64) {
        println!(
            "{what:<58} p50 {value:>10.1} {unit}   = {:>6.2}x {baseline} ({base:.1} {unit})",
            value / base
        );
    }

    /// A raw POSIX shm mapping, like the ones mmf segments use, for the baselines.
    struct RawShm {
        ptr: NonNull<u8>,
        len: usize,
        name: String,
        owner: bool,
    }

    impl RawShm {
        fn new(name: &str, create: bool) -> RawShm {
            let path = format!("/{name}");
            let flags = if create {
                shm::OFlags::CREATE | shm::OFlags::EXCL | shm::OFlags::RDWR
            } else {
                shm::OFlags::RDWR
            };
            let fd = shm::open(path.as_str(), flags, Mode::from_bits_truncate(0o600)).unwrap();
            let len = 4096;
            if create {
                rustix::fs::ftruncate(&fd, len as u64).unwrap();
            }
            // SAFETY: a fresh shared mapping of our own object at a kernel-chosen address.
            let ptr = unsafe {
                mm::mmap(
                    std::ptr::null_mut(),
                    len,
                    ProtFlags::READ | ProtFlags::WRITE,
                    MapFlags::SHARED | MapFlags::POPULATE,
                    &fd,
                    0,
                )
            }
            .unwrap();
            RawShm {
                ptr: NonNull::new(ptr.cast()).unwrap(),
                len,
                name: path,
                owner: create,
            }
        }

        /// Word `i` (on cache line `i / 16`).
        fn word(&self, i: usize) -> &AtomicU32 {
            assert!(i < self.len / 4);
            // wrapping_add: no unsafe needed for the address; the assert keeps it in bounds.
            let p = self.ptr.as_ptr().cast::<AtomicU32>().wrapping_add(i);
            // SAFETY: in bounds (checked), 4-aligned, mapped for self's lifetime; shared
            // memory is only accessed atomically.
            unsafe { &*p }
        }

        fn word64(&self, i: usize) -> &AtomicU64 {
            assert!(i * 8 < self.len);
            let p = self.ptr.as_ptr().cast::<AtomicU64>().wrapping_add(i);
            // SAFETY: as for `word`, 8-aligned.
            unsafe { &*p }
        }
    }

    impl Drop for RawShm {
        fn drop(&mut self) {
            // SAFETY: our own mapping, no borrows outlive self.
            let _ = unsafe { mm::munmap(self.ptr.as_ptr().cast(), self.len) };
            if self.owner {
                let _ = shm::unlink(self.name.as_str());
            }
        }
    }

    pub fn main() {
        if let Ok(role) = std::env::var(ROLE) {
            let name = std::env::var(NAME).unwrap();
            // Watchdog: when the parent goes away (its end of our stdin closes), so do we,
            // rather than spin on forever.
            std::thread::spawn(|| {
                let _ = std::io::copy(&mut std::io::stdin(), &mut std::io::sink());
                std::process::exit(3);
            });
            match role.as_str() {
                "pong" => pong(&name),
                "echo" => echo(&name),
                "see" => see(&name),
                "waiter" => waiter(&name),
                "futex" => futex_waiter(&name, false),
                "futex-timed" => futex_waiter(&name, true),
                "sleepy" => sleepy_reader(&name),
                "uds" => uds_reader(&name),
                other => panic!("unknown role {other}"),
            }
            return;
        }
        if std::env::args().any(|a| a == "--list") {
            return; // `cargo bench -- --list` and `cargo test --benches` probing
        }
        let start = Instant::now();
        println!("mmf frame channel benchmarks (p50 over repeated samples; ratio to the baseline measured just before)");
        // `cargo bench --bench channel -- small wake` runs only those sections.
        let only: Vec<String> = std::env::args()
            .skip(1)
            .filter(|a| !a.starts_with('-'))
            .collect();
        let sections: [(&str, fn()); 5] = [
            ("small", small_frames),
            ("large", large_frames),
            ("latest", latest_cost),
            ("wake", wake_latency),
            ("rate", publish_rate),
        ];
        for (name, run) in sections {
            if only.is_empty() || only.iter().any(|o| o == name) {
                run();
            }
        }
        println!("total bench time {:.0} s", start.elapsed().as_secs_f64());
    }

    // ---------------------------------------------------------------------------------
    // 1. Small frames: one-way latency, against a raw cache-line ping-pong.

    fn pong(name: &str) {
        let shm = RawShm::new(name, false);
        let word = shm.word(0);
        say("ready", 1);
        let mut expect = 1u32;
        loop {
            match word.load(SeqCst) {
                u32::MAX => return,
                v if v == expect => {
                    word.store(expect + 1, SeqCst);
                    expect += 2;
                }
                _ => std::hint::spin_loop(),
            }
        }
    }

    /// One reader, 64 B frames, `slots` slots (0: the default, 16 for frames this small).
    /// A frame, or `None` for "not yet": `WouldBlock` means the writer was preempted in the
    /// middle of publishing for longer than `try_next` retries (it happens on a loaded
    /// machine), which a polling loop treats like no new frame.
    fn next_or_none(next: mmf::Result<Option<mmf::Frame<'_>>>) -> Option<mmf::Frame<'_>> {
        match next {
            Ok(frame) => frame,
            Err(mmf::Error::WouldBlock) => None,
            Err(other) => panic!("try_next: {other}"),
        }
    }

    fn small_spec(slots: usize) -> FrameSpec {
        FrameSpec::new(64).max_readers(1).slots(slots)
    }

    fn echo(name: &str) {
        let touch = std::env::var("MMF_BENCH_TOUCH").is_ok_and(|v| v == "1");
        let slots = std::env::var("MMF_BENCH_SLOTS").unwrap().parse().unwrap();
        let mut inbound = FrameReader::open(&format!("{name}-a")).unwrap();
        let mut outbound = FrameWriter::create(&format!("{name}-b"), small_spec(slots)).unwrap();
        outbound.set_timestamps(std::env::var("MMF_BENCH_CLOCK").is_ok_and(|v| v == "1"));
        say("ready", 1);
        loop {
            let Some(frame) = next_or_none(inbound.try_next()) else {
                std::hint::spin_loop();
                continue;
            };
            let stop = frame.tag() == u64::MAX;
            // Either read the frame's bytes (and send them back), or only take the frame.
            let payload: [u8; 64] = if touch {
                frame[..64].try_into().unwrap()
            } else {
                [1; 64]
            };
            drop(frame);
            outbound.publish(&payload).unwrap();
            if stop {
                // Remove our channel before saying so: the parent then closes our stdin,
                // which ends this process through the watchdog.
                drop(outbound);
                say("done", 1);
                return;
            }
        }
    }

    fn small_frames() {
        // Alternate rounds of the floor and the channel (the machine is shared and its load
        // changes); pool the batches of each.
        let rounds = 4;
        let (mut floor, mut plain, mut touched, mut fewest, mut unstamped) =
            (Vec::new(), Vec::new(), Vec::new(), Vec::new(), Vec::new());
        for _ in 0..rounds {
            floor.extend(floor_one_way(BATCHES / rounds));
            plain.extend(echo_one_way(false, 0, true, BATCHES / rounds));
            touched.extend(echo_one_way(true, 0, true, BATCHES / rounds));
            fewest.extend(echo_one_way(false, 3, true, BATCHES / rounds));
            unstamped.extend(echo_one_way(false, 0, false, BATCHES / rounds));
        }
        let floor50 = pct(&sorted(floor), 0.5);
        println!("\n[1] 64 B frame, publish -> visible to a busy-polling reader in another process (half a round trip, {BATCHES} batches of {ROUND_TRIPS_PER_BATCH})");
        line(
            "cache-line ping-pong floor (one way)",
            floor50,
            "ns",
            "floor",
            floor50,
        );
        line(
            "frame channel publish -> try_next (one way)",
            pct(&sorted(plain), 0.5),
            "ns",
            "floor",
            floor50,
        );
        line(
            "same, timestamps off (FrameWriter::set_timestamps)",
            pct(&sorted(unstamped), 0.5),
            "ns",
            "floor",
            floor50,
        );
        line(
            "same, 3 slots (the fewest for 1 reader; default 16)",
            pct(&sorted(fewest), 0.5),
            "ns",
            "floor",
            floor50,
        );
        line(
            "frame channel publish -> try_next, payload read (one way)",
            pct(&sorted(touched), 0.5),
            "ns",
            "floor",
            floor50,
        );
    }

    /// Half the round trip of two processes bouncing one cache line of a shared mapping.
    fn floor_one_way(batches: usize) -> Vec<f64> {
        let n = name("pp");
        let shm = RawShm::new(&n, true);
        let mut child = spawn("pong", &n);
        expect(&mut child, "ready");
        let word = shm.word(0);
        let mut next = 1u32;
        let mut floor = Vec::new();
        for _ in 0..batches {
            let t = Instant::now();
            for _ in 0..ROUND_TRIPS_PER_BATCH {
                word.store(next, SeqCst);
                while word.load(SeqCst) != next + 1 {
                    std::hint::spin_loop();
                }
                next += 2;
            }
            floor.push(t.elapsed().as_nanos() as f64 / ROUND_TRIPS_PER_BATCH as f64 / 2.0);
        }
        word.store(u32::MAX, SeqCst);
        child.wait().unwrap();
        floor
    }

    /// Half the round trip of a 64 B frame there and a 64 B frame back, both readers
    /// busy-polling; `touch`: the readers also read the frame's bytes.
    fn echo_one_way(touch: bool, slots: usize, clock: bool, batches: usize) -> Vec<f64> {
        let n = name(if touch { "echo-t" } else { "echo" });
        let mut out = FrameWriter::create(&format!("{n}-a"), small_spec(slots)).unwrap();
        out.set_timestamps(clock);
        let mut child = Command::new(std::env::current_exe().unwrap())
            .env(ROLE, "echo")
            .env(NAME, &n)
            .env("MMF_BENCH_TOUCH", if touch { "1" } else { "0" })
            .env("MMF_BENCH_SLOTS", slots.to_string())
            .env("MMF_BENCH_CLOCK", if clock { "1" } else { "0" })
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        expect(&mut child, "ready");
        let mut back = FrameReader::open(&format!("{n}-b")).unwrap();
        let payload = [0x5a; 64];
        let mut one_way = Vec::new();
        let mut sink = 0u8;
        for _ in 0..batches {
            let t = Instant::now();
            for _ in 0..ROUND_TRIPS_PER_BATCH {
                out.publish(&payload).unwrap();
                loop {
                    if let Some(frame) = next_or_none(back.try_next()) {
                        if touch {
                            sink ^= frame[63];
                        }
                        break;
                    }
                    std::hint::spin_loop();
                }
            }
            one_way.push(t.elapsed().as_nanos() as f64 / ROUND_TRIPS_PER_BATCH as f64 / 2.0);
        }
        std::hint::black_box(sink);
        out.set_meta(FrameMeta {
            tag: u64::MAX,
            ..FrameMeta::default()
        });
        out.publish(&payload).unwrap();
        expect(&mut child, "done");
        child.wait().unwrap();
        one_way
    }

    // ---------------------------------------------------------------------------------
    // 2. 1080p frames: written by the writer and seen by a reader in another process.

    fn see(name: &str) {
        let mut reader = FrameReader::open(name).unwrap();
        say("ready", 1);
        let mut lat = Vec::new();
        loop {
            let Some(frame) = next_or_none(reader.try_next()) else {
                std::hint::spin_loop();
                continue;
            };
            let now = monotonic_ns();
            if frame.tag() == u64::MAX {
                break;
            }
            lat.push(now.saturating_sub(frame.tag()) as f64);
        }
        let lat = sorted(lat);
        say("p50", pct(&lat, 0.5));
        say("p99", pct(&lat, 0.99));
    }

    fn source_frame() -> Vec<u8> {
        (0..FRAME_1080P).map(|i| (i * 31 % 251) as u8).collect()
    }

    fn large_frames() {
        let src = source_frame();
        // The baseline is the best the machine does: a warm memcpy, into the same destination
        // every time (a Vec from the heap, where the allocator puts it).
        let mut dst = vec![1u8; FRAME_1080P];
        // The baseline is sampled between the channel's frames, so both see the same load.
        let mut base = Vec::new();

        let n = name("see");
        let mut writer =
            FrameWriter::create(&n, FrameSpec::new(FRAME_1080P).max_readers(3)).unwrap();
        let mut child = spawn("see", &n);
        expect(&mut child, "ready");
        for _ in 0..60 {
            let t = monotonic_ns();
            dst.copy_from_slice(&src);
            std::hint::black_box(&dst);
            base.push((monotonic_ns() - t) as f64);
            std::thread::sleep(Duration::from_millis(2));
            let t0 = monotonic_ns();
            writer.set_meta(FrameMeta {
                tag: t0,
                ..FrameMeta::default()
            });
            writer
                .publish_with(|buf| {
                    buf[..FRAME_1080P].copy_from_slice(&src);
                    FRAME_1080P
                })
                .unwrap();
            std::thread::sleep(Duration::from_millis(5));
        }
        writer.set_meta(FrameMeta {
            tag: u64::MAX,
            ..FrameMeta::default()
        });
        writer.publish(&[0]).unwrap();
        let p50: f64 = expect(&mut child, "p50").parse().unwrap();
        let p99: f64 = expect(&mut child, "p99").parse().unwrap();
        child.wait().unwrap();
        let base = sorted(base);

        // The same frames over a Unix domain socket, read into the reader's own buffer.
        let path = std::env::temp_dir().join(format!("mmfb-uds-{}", std::process::id()));
        let _ = std::fs::remove_file(&path);
        let listener = UnixListener::bind(&path).unwrap();
        let mut child = spawn("uds", path.to_str().unwrap());
        let (mut sock, _) = listener.accept().unwrap();
        for i in 0..41u64 {
            let t0 = if i == 40 { u64::MAX } else { monotonic_ns() };
            sock.write_all(&t0.to_le_bytes()).unwrap();
            sock.write_all(&src).unwrap();
            std::thread::sleep(Duration::from_millis(5));
        }
        let uds_p50: f64 = expect(&mut child, "p50").parse().unwrap();
        child.wait().unwrap();
        let _ = std::fs::remove_file(&path);

        let m = pct(&base, 0.5);
        println!("\n[2] 1080p RGB frame (6,220,800 B): writer copies it in, reader in another process sees it (busy-polling)");
        line(
            "memcpy of the frame (baseline)",
            m / 1000.0,
            "us",
            "memcpy",
            m / 1000.0,
        );
        line(
            "frame channel publish_with(memcpy) -> seen",
            p50 / 1000.0,
            "us",
            "memcpy",
            m / 1000.0,
        );
        println!("{:<58} p99 {:>10.1} us", "", p99 / 1000.0);
        line(
            "Unix domain socket write -> read complete",
            uds_p50 / 1000.0,
            "us",
            "memcpy",
            m / 1000.0,
        );
    }

    fn uds_reader(path: &str) {
        let mut sock = UnixStream::connect(path).unwrap();
        let mut buf = vec![0u8; FRAME_1080P];
        let mut lat = Vec::new();
        loop {
            let mut t0 = [0u8; 8];
            sock.read_exact(&mut t0).unwrap();
            sock.read_exact(&mut buf).unwrap();
            let now = monotonic_ns();
            let t0 = u64::from_le_bytes(t0);
            if t0 == u64::MAX {
                break;
            }
            lat.push(now.saturating_sub(t0) as f64);
        }
        let lat = sorted(lat);
        say("p50", pct(&lat, 0.5));
    }

    // ---------------------------------------------------------------------------------
    // 3. latest() is O(1): the same for 4 KiB and 8 MiB frames.

    fn latest_cost() {
        let mut per_size = Vec::new();
        for len in [4096usize, 8 << 20] {
            let n = name(&format!("latest{len}"));
            let mut writer = FrameWriter::create(&n, FrameSpec::new(len).max_readers(1)).unwrap();
            writer.publish_with(|_| len).unwrap();
            let mut reader = FrameReader::open(&n).unwrap();
            let mut v = Vec::new();
            for _ in 0..BATCHES {
                let t = Instant::now();
                for _ in 0..10_000 {
                    let frame = reader.latest().unwrap().unwrap();
                    std::hint::black_box(frame.len());
                }
                v.push(t.elapsed().as_nanos() as f64 / 10_000.0);
            }
            per_size.push(pct(&sorted(v), 0.5));
        }
        println!("\n[3] latest() + drop, same process, frame already published");
        line(
            "latest() on a 4 KiB frame",
            per_size[0],
            "ns",
            "4 KiB",
            per_size[0],
        );
        line(
            "latest() on an 8 MiB frame",
            per_size[1],
            "ns",
            "4 KiB",
            per_size[0],
        );
    }

    // ---------------------------------------------------------------------------------
    // 4. wait_next wake-up latency: spinning, asleep, and a bare futex wake.

    fn waiter(name: &str) {
        let mut reader = FrameReader::open(name).unwrap();
        say("ready", 1);
        let mut lat = Vec::new();
        loop {
            let frame = reader.wait_next(Duration::from_secs(10)).unwrap();
            let now = monotonic_ns();
            if frame.tag() == u64::MAX {
                break;
            }
            if frame.skipped() == 0 {
                lat.push(now.saturating_sub(frame.timestamp_ns()) as f64);
            }
        }
        let lat = sorted(lat);
        say("p50", pct(&lat, 0.5));
        say("p99", pct(&lat, 0.99));
    }

    fn wait_next_latency(gap: Duration, count: usize) -> (f64, f64) {
        let n = name("wait");
        let mut writer = FrameWriter::create(&n, FrameSpec::new(64).max_readers(1)).unwrap();
        let mut child = spawn("waiter", &n);
        expect(&mut child, "ready");
        for _ in 0..count {
            let until = Instant::now() + gap;
            if gap > Duration::from_millis(1) {
                std::thread::sleep(gap);
            } else {
                while Instant::now() < until {
                    std::hint::spin_loop();
                }
            }
            writer.publish(&[1; 64]).unwrap();
        }
        std::thread::sleep(gap.max(Duration::from_millis(1)));
        writer.set_meta(FrameMeta {
            tag: u64::MAX,
            ..FrameMeta::default()
        });
        writer.publish(&[2; 64]).unwrap();
        let p50 = expect(&mut child, "p50").parse().unwrap();
        let p99 = expect(&mut child, "p99").parse().unwrap();
        child.wait().unwrap();
        (p50, p99)
    }

    /// `timed`: each wait carries a timeout (10 s), as wait_next's does.
    fn futex_waiter(name: &str, timed: bool) {
        let shm = RawShm::new(name, false);
        let (word, stamp) = (shm.word(0), shm.word64(8));
        say("ready", 1);
        let mut lat = Vec::new();
        let mut seen = 0u32;
        loop {
            while word.load(SeqCst) == seen {
                let timeout = futex::Timespec {
                    tv_sec: 10,
                    tv_nsec: 0,
                };
                let timeout = timed.then_some(&timeout);
                let _ = futex::wait(word, futex::Flags::empty(), seen, timeout);
            }
            let now = monotonic_ns();
            seen = word.load(SeqCst);
            let t0 = stamp.load(SeqCst);
            if t0 == u64::MAX {
                break;
            }
            lat.push(now.saturating_sub(t0) as f64);
        }
        let lat = sorted(lat);
        say("p50", pct(&lat, 0.5));
    }

    fn futex_latency(gap: Duration, count: usize, timed: bool) -> f64 {
        let n = name("futex");
        let shm = RawShm::new(&n, true);
        let mut child = spawn(if timed { "futex-timed" } else { "futex" }, &n);
        expect(&mut child, "ready");
        let (word, stamp) = (shm.word(0), shm.word64(8));
        for i in 0..=count {
            std::thread::sleep(gap);
            stamp.store(if i == count { u64::MAX } else { monotonic_ns() }, SeqCst);
            word.fetch_add(1, SeqCst);
            let _ = futex::wake(word, futex::Flags::empty(), 1);
        }
        let p50 = expect(&mut child, "p50").parse().unwrap();
        child.wait().unwrap();
        p50
    }

    fn wake_latency() {
        let (spin50, spin99) = wait_next_latency(Duration::from_micros(5), 20_000);
        // Alternate rounds of the baseline and the channel, so a change in machine load
        // (the machine is shared) hits both; report medians of the rounds' p50s.
        let (mut futex, mut timed, mut sleep, mut sleep_p99) =
            (Vec::new(), Vec::new(), Vec::new(), Vec::new());
        for _ in 0..9 {
            futex.push(futex_latency(Duration::from_millis(2), 100, false));
            timed.push(futex_latency(Duration::from_millis(2), 100, true));
            let (p50, p99) = wait_next_latency(Duration::from_millis(2), 100);
            sleep.push(p50);
            sleep_p99.push(p99);
        }
        let futex50 = pct(&sorted(futex), 0.5);
        let timed50 = pct(&sorted(timed), 0.5);
        let sleep50 = pct(&sorted(sleep), 0.5);
        let sleep99 = pct(&sorted(sleep_p99), 0.5);
        println!("\n[4] wait_next: publish -> wait_next returns in another process");
        println!(
            "{:<58} p50 {:>10.0} ns   (goal < 2000 ns; p99 {spin99:.0} ns)",
            "while spinning (a frame every 5 us)", spin50
        );
        line(
            "bare futex wake (baseline; a wake every 2 ms)",
            futex50 / 1000.0,
            "us",
            "futex",
            futex50 / 1000.0,
        );
        line(
            "futex wake of a waiter with a timeout (as wait_next's)",
            timed50 / 1000.0,
            "us",
            "futex",
            futex50 / 1000.0,
        );
        line(
            "asleep in wait_next (a frame every 2 ms)",
            sleep50 / 1000.0,
            "us",
            "futex",
            futex50 / 1000.0,
        );
        println!("{:<58} p99 {:>10.1} us", "", sleep99 / 1000.0);
    }

    // ---------------------------------------------------------------------------------
    // 5. Publish rate of 1080p frames with 3 readers attached, against memcpy.

    fn sleepy_reader(name: &str) {
        let mut reader = FrameReader::open(name).unwrap();
        say("ready", 1);
        loop {
            match reader.wait_next(Duration::from_millis(500)) {
                Ok(frame) if frame.tag() == u64::MAX => break,
                Ok(frame) => {
                    std::hint::black_box(frame[frame.len() / 2]);
                }
                Err(_) => {}
            }
        }
        say("frames", reader.received());
    }

    fn publish_rate() {
        const FRAMES: usize = 150;
        let src = source_frame();
        // A warm memcpy into one destination, as in [2].
        let mut dst = vec![1u8; FRAME_1080P];
        dst.copy_from_slice(&src);
        let t = Instant::now();
        for _ in 0..FRAMES {
            dst.copy_from_slice(&src);
            std::hint::black_box(&dst);
        }
        let memcpy_rate = FRAMES as f64 / t.elapsed().as_secs_f64();

        let n = name("rate");
        let mut writer =
            FrameWriter::create(&n, FrameSpec::new(FRAME_1080P).max_readers(3)).unwrap();
        let mut children: Vec<_> = (0..3).map(|_| spawn("sleepy", &n)).collect();
        for c in &mut children {
            expect(c, "ready");
        }
        let t = Instant::now();
        for _ in 0..FRAMES {
            writer.publish(&src).unwrap();
        }
        let rate = FRAMES as f64 / t.elapsed().as_secs_f64();
        writer.set_meta(FrameMeta {
            tag: u64::MAX,
            ..FrameMeta::default()
        });
        writer.publish(&[0]).unwrap();
        let got: Vec<String> = children.iter_mut().map(|c| expect(c, "frames")).collect();
        for mut c in children {
            c.wait().unwrap();
        }
        println!("\n[5] publish(&frame) of 1080p frames, flat out, 3 reader processes in wait_next (frames seen: {})", got.join(", "));
        println!(
            "{:<58}     {:>10.0} fps  = 1.00x memcpy",
            "memcpy rate (baseline)", memcpy_rate
        );
        println!(
            "{:<58}     {:>10.0} fps  = {:.2}x memcpy",
            "frame channel publish rate",
            rate,
            rate / memcpy_rate
        );
    }
}
