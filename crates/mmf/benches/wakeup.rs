//! Wake-up latency of a process blocked on a segment's lock when another process unlocks it,
//! next to the floor measured in the same run: a bare futex wait/wake between the same two
//! processes on a word of a separate shared mapping.
//!
//! Criterion cannot time an event that starts in one process and ends in another, so this is
//! a plain binary (`harness = false`) that re-launches itself as the blocked process. Each
//! sample: the parent holds the lock; the child announces that it is about to block and
//! blocks (in `write()` or `read()`, or in `futex` wait for the floor); the parent waits
//! until the kernel reports the child asleep (`/proc/<pid>/stat` state `S`), so the figure is
//! a real kernel wake-up and not a hand-over during the lock's short spin; it then reads
//! `CLOCK_MONOTONIC` and releases. The child reads the same clock as soon as it is in. The
//! clock is system-wide, so the two readings compare across processes (a `std::time::Instant`
//! cannot be sent to another process). The latency therefore includes the releaser's
//! unlock, the wake syscall, the scheduler and the waiter's return from the kernel.
//!
//! Where the woken process runs matters as much as how it is woken, so every case runs twice:
//! with both processes pinned to one CPU (the waker goes on running there, and the woken
//! process must preempt it), and pinned to two different CPUs (the woken process's CPU is
//! idle and must be woken itself). Without pinning the scheduler mostly picks the first.
//!
//! `cargo bench -p mmf --bench wakeup` runs 2000 samples per case; without `--bench` (e.g.
//! `cargo test --benches`) it runs 20 as a smoke test. Linux only.

#[cfg(target_os = "linux")]
fn main() {
    if let Err(message) = linux::run() {
        eprintln!("wakeup: {message}");
        std::process::exit(1);
    }
}

#[cfg(not(target_os = "linux"))]
fn main() {
    println!("wakeup: Linux only (needs a shared futex and /proc); skipped");
}

#[cfg(target_os = "linux")]
mod linux {
    use std::env;
    use std::process::{Child, Command};
    use std::ptr::NonNull;
    use std::sync::atomic::Ordering::{Acquire, Relaxed, Release};
    use std::sync::atomic::{AtomicU32, AtomicU64};
    use std::thread;
    use std::time::{Duration, Instant};

    use mmf::{Mmf, MmfOptions};
    use rustix::fd::OwnedFd;
    use rustix::fs::Mode;
    use rustix::mm::{self, MapFlags, ProtFlags};
    use rustix::shm;
    use rustix::thread::{futex, sched_setaffinity, CpuSet};
    use rustix::time::{clock_gettime, ClockId};

    /// Environment variable that turns the re-launched binary into the blocked process:
    /// `<case>:<segment name>:<side mapping name>:<samples>:<cpu>`.
    const CHILD_ENV: &str = "MMF_BENCH_WAKEUP_CHILD";

    /// How long one side waits for the other before the benchmark gives up.
    const PATIENCE: Duration = Duration::from_secs(10);

    type Result<T = ()> = std::result::Result<T, String>;

    /// What the child blocks in.
    #[derive(Clone, Copy, PartialEq, Eq, Debug)]
    enum Case {
        /// `FUTEX_WAIT` on a bare word: the floor.
        Futex,
        /// Seven `sched_yield` calls, then `FUTEX_WAIT`: what the lock's spin cost when it
        /// ended in yields as parking_lot's does (`SpinWait` in lock/protocol.rs says why it no
        /// longer does).
        FutexAfterYields,
        /// `Mmf::write()` while the parent holds the write lock.
        MmfWrite,
        /// `Mmf::read()` while the parent holds the write lock.
        MmfRead,
    }

    impl Case {
        const ALL: [Case; 4] = [
            Case::Futex,
            Case::FutexAfterYields,
            Case::MmfWrite,
            Case::MmfRead,
        ];

        fn name(self) -> &'static str {
            match self {
                Case::Futex => "futex_floor",
                Case::FutexAfterYields => "futex_yields",
                Case::MmfWrite => "mmf_write",
                Case::MmfRead => "mmf_read",
            }
        }

        fn parse(s: &str) -> Result<Case> {
            Case::ALL
                .into_iter()
                .find(|c| c.name() == s)
                .ok_or_else(|| format!("unknown case {s:?}"))
        }
    }

    /// The parent-child handshake, in a shared mapping of its own (not the segment under
    /// test, whose lock is what is being measured). Sample numbers start at 1.
    #[repr(C)]
    struct Side {
        /// Parent: "I hold the lock (or reset the futex word) for sample n; block now".
        go: AtomicU32,
        /// Child: "I am about to block for sample n".
        ready: AtomicU32,
        /// Child: "sample n is recorded in `latency_ns`".
        done: AtomicU32,
        /// The floor's futex word: 0 until the parent wakes the child.
        futex: AtomicU32,
        /// Parent: `CLOCK_MONOTONIC` just before the release, in nanoseconds.
        release_ns: AtomicU64,
        /// Child: its clock on getting in, minus `release_ns`.
        latency_ns: AtomicU64,
    }

    const SIDE_LEN: usize = 4096;
    const _: () = assert!(std::mem::size_of::<Side>() <= SIDE_LEN);

    /// The handshake mapping: POSIX shm, created by the parent, opened by the child.
    struct SideMap {
        ptr: NonNull<Side>,
        name: String,
        owner: bool,
    }

    impl SideMap {
        fn create(name: String) -> Result<SideMap> {
            let fd = shm::open(
                name.as_str(),
                shm::OFlags::CREATE | shm::OFlags::EXCL | shm::OFlags::RDWR,
                Mode::RUSR | Mode::WUSR,
            )
            .map_err(|e| format!("shm_open({name}): {e}"))?;
            let map = Self::map(&fd, name.clone(), true);
            if map.is_err() {
                let _ = shm::unlink(name.as_str());
            }
            map
        }

        fn open(name: String) -> Result<SideMap> {
            let fd = shm::open(name.as_str(), shm::OFlags::RDWR, Mode::empty())
                .map_err(|e| format!("shm_open({name}): {e}"))?;
            Self::map(&fd, name, false)
        }

        fn map(fd: &OwnedFd, name: String, owner: bool) -> Result<SideMap> {
            if owner {
                rustix::fs::ftruncate(fd, SIDE_LEN as u64)
                    .map_err(|e| format!("ftruncate({name}): {e}"))?;
            }
            // SAFETY: a fresh shared mapping at a kernel-chosen address (null hint) aliases no
            // Rust object; `fd` is open read-write and SIDE_LEN is non-zero.
            let raw = unsafe {
                mm::mmap(
                    std::ptr::null_mut(),
                    SIDE_LEN,
                    ProtFlags::READ | ProtFlags::WRITE,
                    MapFlags::SHARED,
                    fd,
                    0,
                )
            }
            .map_err(|e| format!("mmap({name}): {e}"))?;
            let ptr = NonNull::new(raw.cast::<Side>()).ok_or("mmap returned null")?;
            Ok(SideMap { ptr, name, owner })
        }

        fn side(&self) -> &Side {
            // SAFETY: the page-aligned mapping holds SIDE_LEN >= size_of::<Side>() bytes and
            // lives until `self` drops; Side is only atomics, valid for any bytes and for
            // mutation by the other process.
            unsafe { self.ptr.as_ref() }
        }
    }

    impl Drop for SideMap {
        fn drop(&mut self) {
            // SAFETY: ptr/SIDE_LEN is the mapping made in `map`, unmapped only here; every
            // borrow of it is tied to a borrow of `self`, which has ended.
            let unmapped = unsafe { mm::munmap(self.ptr.as_ptr().cast(), SIDE_LEN) };
            debug_assert!(unmapped.is_ok(), "munmap failed: {unmapped:?}");
            if self.owner {
                // Ignored: nothing useful to do about a name that is already gone.
                let _ = shm::unlink(self.name.as_str());
            }
        }
    }

    /// Pins this process to `cpu`.
    fn pin(cpu: usize) -> Result {
        let mut set = CpuSet::new();
        set.set(cpu);
        sched_setaffinity(None, &set).map_err(|e| format!("pin to CPU {cpu}: {e}"))
    }

    /// `CLOCK_MONOTONIC` in nanoseconds: one clock for every process on the machine.
    fn now_ns() -> u64 {
        let t = clock_gettime(ClockId::Monotonic);
        t.tv_sec as u64 * 1_000_000_000 + t.tv_nsec as u64
    }

    /// Sleeps (not spins: there are only two cores, and the other process needs one) until
    /// `cond` holds, or fails after PATIENCE or when the child has exited.
    fn wait_until(what: &str, child: Option<&mut Child>, cond: impl Fn() -> bool) -> Result {
        let start = Instant::now();
        let mut child = child;
        while !cond() {
            if start.elapsed() > PATIENCE {
                return Err(format!("timed out waiting for {what}"));
            }
            if let Some(child) = child.as_mut() {
                if let Ok(Some(status)) = child.try_wait() {
                    return Err(format!("child exited ({status}) while waiting for {what}"));
                }
            }
            thread::sleep(Duration::from_micros(50));
        }
        Ok(())
    }

    /// Whether process `pid` sleeps in the kernel (state `S` in `/proc/<pid>/stat`).
    fn is_asleep(pid: u32) -> bool {
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
            return false;
        };
        // The state follows the command name, which is in parentheses and may contain any
        // character: look after the last ')'.
        stat.rfind(')')
            .and_then(|i| stat[i + 1..].split_whitespace().next())
            == Some("S")
    }

    pub fn run() -> Result {
        if let Ok(spec) = env::var(CHILD_ENV) {
            return child(&spec);
        }
        // `cargo bench` passes --bench; anything else (cargo test --benches) is a smoke test.
        let full = env::args().any(|a| a == "--bench");
        let samples = if full { 2000 } else { 20 };
        println!("wakeup latency of a blocked process, {samples} samples per case");
        let cpus = thread::available_parallelism().map_or(1, |n| n.get());
        for (placement, child_cpu) in [("same_cpu", 0), ("two_cpus", 1)] {
            if child_cpu >= cpus {
                println!("wakeup/{placement}: skipped, only {cpus} CPU");
                continue;
            }
            pin(0)?;
            let mut floor_p50 = None;
            for case in Case::ALL {
                let mut lat = parent(case, samples, child_cpu)?;
                lat.sort_unstable();
                let p50 = percentile(&lat, 50.0);
                let p99 = percentile(&lat, 99.0);
                let floor = *floor_p50.get_or_insert(p50);
                println!(
                    "wakeup/{placement}/{:<12} p50 {:>6.2} us  p99 {:>7.2} us  min {:>5.2} us  p50 = {:.2}x floor",
                    case.name(),
                    p50 as f64 / 1e3,
                    p99 as f64 / 1e3,
                    lat[0] as f64 / 1e3,
                    p50 as f64 / floor as f64,
                );
            }
        }
        Ok(())
    }

    fn percentile(sorted: &[u64], p: f64) -> u64 {
        let i = ((sorted.len() - 1) as f64 * p / 100.0).round() as usize;
        sorted[i]
    }

    fn parent(case: Case, samples: u32, child_cpu: usize) -> Result<Vec<u64>> {
        let tag = format!("{}-{}", std::process::id(), case.name());
        let seg_name = format!("mmf-bench-wake-{tag}");
        let side_name = format!("/mmf-bench-wake-side-{tag}");
        let seg: Mmf = MmfOptions::new(seg_name.as_str())
            .prefault(true)
            .lock_timeout(Some(PATIENCE))
            .create(4096)
            .map_err(|e| e.to_string())?;
        let map = SideMap::create(side_name.clone())?;
        let side = map.side();

        let exe = env::current_exe().map_err(|e| e.to_string())?;
        let mut child = Command::new(exe)
            .env(
                CHILD_ENV,
                format!(
                    "{}:{seg_name}:{side_name}:{samples}:{child_cpu}",
                    case.name()
                ),
            )
            .spawn()
            .map_err(|e| format!("spawn the child: {e}"))?;
        let pid = child.id();

        let result = (|| -> Result<Vec<u64>> {
            let mut lat = Vec::with_capacity(samples as usize);
            for n in 1..=samples {
                // Holding the lock (or a zeroed futex word) before telling the child to block.
                let mut guard = match case {
                    Case::Futex | Case::FutexAfterYields => {
                        side.futex.store(0, Relaxed);
                        None
                    }
                    Case::MmfWrite | Case::MmfRead => Some(seg.write().map_err(|e| e.to_string())?),
                };
                // Release: the child's Acquire load of `go` then sees the futex word reset.
                side.go.store(n, Release);
                // Acquire: pairs with the child's Release store of `ready`.
                wait_until("the child to block", Some(&mut child), || {
                    side.ready.load(Acquire) == n
                })?;
                thread::sleep(Duration::from_micros(200));
                wait_until("the child to sleep in the kernel", Some(&mut child), || {
                    is_asleep(pid)
                })?;
                match guard.take() {
                    None => {
                        // Relaxed: the Release store of the futex word publishes it.
                        side.release_ns.store(now_ns(), Relaxed);
                        // Release: pairs with the child's Acquire load of the word.
                        side.futex.store(1, Release);
                        futex::wake(&side.futex, futex::Flags::empty(), 1)
                            .map_err(|e| format!("futex wake: {e}"))?;
                    }
                    Some(mut guard) => {
                        // Written under the lock; the child reads it under the lock.
                        guard[..8].copy_from_slice(&now_ns().to_ne_bytes());
                        drop(guard);
                    }
                }
                // Acquire: pairs with the child's Release store of `done`, after `latency_ns`.
                wait_until("the child to record the sample", Some(&mut child), || {
                    side.done.load(Acquire) == n
                })?;
                lat.push(side.latency_ns.load(Relaxed));
            }
            Ok(lat)
        })();
        if result.is_err() {
            // The child may be blocked on a lock this process no longer releases.
            let _ = child.kill();
        }
        let status = child.wait().map_err(|e| e.to_string())?;
        let lat = result?;
        if !status.success() {
            return Err(format!("{} child failed: {status}", case.name()));
        }
        Ok(lat)
    }

    fn child(spec: &str) -> Result {
        let mut parts = spec.split(':');
        let (Some(case), Some(seg_name), Some(side_name), Some(samples), Some(cpu), None) = (
            parts.next(),
            parts.next(),
            parts.next(),
            parts.next(),
            parts.next(),
            parts.next(),
        ) else {
            return Err(format!("bad {CHILD_ENV}: {spec:?}"));
        };
        let case = Case::parse(case)?;
        let samples: u32 = samples.parse().map_err(|e| format!("samples: {e}"))?;
        pin(cpu.parse().map_err(|e| format!("cpu: {e}"))?)?;
        // The default configuration (no lock timeout) is what is measured; if the parent fails
        // it kills this process rather than leave it blocked.
        let seg: Mmf = MmfOptions::new(seg_name)
            .open()
            .map_err(|e| e.to_string())?;
        let map = SideMap::open(side_name.to_owned())?;
        let side = map.side();

        for n in 1..=samples {
            // Acquire: pairs with the parent's Release store of `go`.
            wait_until("the parent to hold the lock", None, || {
                side.go.load(Acquire) == n
            })?;
            // Release: pairs with the parent's Acquire load of `ready`.
            side.ready.store(n, Release);
            let latency = match case {
                Case::Futex | Case::FutexAfterYields => {
                    if case == Case::FutexAfterYields {
                        for _ in 0..7 {
                            thread::yield_now();
                        }
                    }
                    // Acquire: pairs with the parent's Release store of the word.
                    while side.futex.load(Acquire) == 0 {
                        // EAGAIN (already woken) and EINTR are re-checked by the loop.
                        let _ = futex::wait(&side.futex, futex::Flags::empty(), 0, None);
                    }
                    let now = now_ns();
                    // Relaxed: ordered by the Acquire load of the futex word above.
                    now.saturating_sub(side.release_ns.load(Relaxed))
                }
                Case::MmfWrite => {
                    let guard = seg.write().map_err(|e| e.to_string())?;
                    let now = now_ns();
                    now.saturating_sub(u64::from_ne_bytes(guard[..8].try_into().unwrap()))
                }
                Case::MmfRead => {
                    let guard = seg.read().map_err(|e| e.to_string())?;
                    let now = now_ns();
                    now.saturating_sub(u64::from_ne_bytes(guard[..8].try_into().unwrap()))
                }
            };
            // Relaxed: published by the Release store of `done`.
            side.latency_ns.store(latency, Relaxed);
            // Release: pairs with the parent's Acquire load of `done`.
            side.done.store(n, Release);
        }
        Ok(())
    }
}
