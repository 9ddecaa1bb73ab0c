//! Two-process latency of `mmf` against the crates and mechanisms people would use instead.
//!
//! ```text
//! cargo xtask bench-peers            # 3 runs, writes docs/peers.svg and docs/peers.md
//! ```
//!
//! Every mechanism is measured the same way: the parent (pinned to one CPU) sends a payload of
//! `size` bytes to a child process (pinned to another CPU), which sends a payload of the same
//! size back; one-way latency is half that round trip. The sender copies the payload in from
//! a heap `Vec` (wherever the allocator put it), stamped with the round's sequence number in
//! its first and last 8 bytes; the receiver checks both stamps where the payload lies (in the
//! mapping, or in its receive buffer) before it answers. Receivers busy-poll, so the figures
//! are hand-over costs, not scheduler wake-ups. Each round trip is timed on its own, from one
//! clock read to the next (one read per round trip, about 25 ns here, in every mechanism
//! alike), so that p50 and p99 are of single events.
//!
//! Mechanisms (`--only` takes these names):
//! - `memcpy`: the floor for moving the bytes: one process, a warm copy into the same heap
//!   destination and the same check, twice per "round trip".
//! - `cacheline`: the floor for telling another CPU: two processes bounce one cache line of a
//!   shared mapping (no payload).
//! - `mmf-frames`: `FrameWriter::publish` / `FrameReader::try_next`, default `FrameSpec` for
//!   one reader (`MMF_PEERS_SLOTS=N` in the environment sets `FrameSpec::slots` instead).
//! - `mmf-lock`: a plain `Mmf` segment per direction: write guard, copy, release; the reader
//!   polls `Mmf::write_seq` and checks under a read guard.
//! - `shm-raw-sync`: `shared_memory` 0.12 with a `raw_sync` 0.1 `RwLock` (process-shared
//!   pthread rwlock) and an atomic sequence word beside it, used the same way as `mmf-lock`.
//! - `iceoryx2`: iceoryx2 0.10 publish-subscribe of `[u8]` slices: `loan_slice_uninit`,
//!   `write_from_slice`, `send` / `receive`.
//! - `uds`: a Unix stream socket: `write_all` / non-blocking `recv` polled until the whole
//!   payload is in.

use std::io::Write as _;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

mod chart;

const ROLE: &str = "MMF_PEERS_ROLE";
const SIZE: &str = "MMF_PEERS_SIZE";
const NAME: &str = "MMF_PEERS_NAME";
const CPU: &str = "MMF_PEERS_CPU";

/// The stop signal: a round whose sequence number is this ends the child.
const STOP: u64 = u64::MAX;
/// A receiver that sees nothing for this long reports the mechanism as broken.
const STALL: Duration = Duration::from_secs(10);

pub const MECHANISMS: [&str; 7] = [
    "memcpy",
    "cacheline",
    "mmf-frames",
    "mmf-lock",
    "shm-raw-sync",
    "iceoryx2",
    "uds",
];
pub const SIZES: [usize; 3] = [64, 8192, 1920 * 1080 * 3];

/// One side of a two-way link: sends this process's payloads and receives the other's.
trait Link {
    /// Opens the other process's side, once that process has said it is ready.
    fn connect(&mut self) {}
    /// Copies `payload` (already stamped) to the other process.
    fn send(&mut self, payload: &[u8]);
    /// Waits for the other process's payload stamped `seq` and checks its stamps. Returns
    /// false if the stamp says stop.
    fn receive(&mut self, seq: u64) -> bool;
}

/// A payload of real bytes: a `vec![0; n]` would leave most of its pages mapped to the
/// kernel's shared zero page, and copying from that one page flatters every copy.
fn payload(size: usize) -> Vec<u8> {
    (0..size).map(|i| (i * 31 % 251) as u8).collect()
}

fn stamp(payload: &mut [u8], seq: u64) {
    let n = payload.len();
    payload[..8].copy_from_slice(&seq.to_le_bytes());
    payload[n - 8..].copy_from_slice(&seq.to_le_bytes());
}

/// Reads the two stamps; panics on a torn payload (a stamp pair that disagrees), which would
/// be a bug in the mechanism under test.
fn stamps(payload: &[u8]) -> u64 {
    let n = payload.len();
    let head = u64::from_le_bytes(payload[..8].try_into().unwrap());
    let tail = u64::from_le_bytes(payload[n - 8..].try_into().unwrap());
    assert_eq!(head, tail, "torn payload: head {head}, tail {tail}");
    head
}

/// Spins until `ready` returns `Some`, with a stall guard checked every few thousand polls.
fn poll<T>(what: &str, mut ready: impl FnMut() -> Option<T>) -> T {
    let start = Instant::now();
    let mut polls = 0u32;
    loop {
        if let Some(v) = ready() {
            return v;
        }
        std::hint::spin_loop();
        polls = polls.wrapping_add(1);
        if polls.is_multiple_of(4096) && start.elapsed() > STALL {
            panic!("{what}: nothing arrived for {STALL:?}");
        }
    }
}

fn expect_seq(got: u64, seq: u64) -> bool {
    if got == STOP {
        return false;
    }
    assert_eq!(got, seq, "out-of-order payload");
    true
}

// -------------------------------------------------------------------------------------------
// Mechanisms

mod mmf_frames {
    use super::*;
    use mmf::{FrameReader, FrameSpec, FrameWriter};

    pub struct Frames {
        writer: FrameWriter,
        reader: Option<FrameReader>,
        reader_name: String,
    }

    impl Frames {
        pub fn new(out: &str, inbound: &str, size: usize) -> Frames {
            let mut spec = FrameSpec::new(size).max_readers(1);
            if let Ok(n) = std::env::var("MMF_PEERS_SLOTS") {
                spec = spec.slots(n.parse().unwrap());
            }
            let writer = FrameWriter::create(out, spec).expect("create the frame channel");
            Frames {
                writer,
                reader: None,
                reader_name: inbound.to_owned(),
            }
        }
        fn open_inbound(&mut self) {
            self.reader = Some(FrameReader::open(&self.reader_name).expect("open the channel"));
        }
    }

    impl Link for Frames {
        fn connect(&mut self) {
            self.open_inbound();
        }
        fn send(&mut self, payload: &[u8]) {
            self.writer.publish(payload).expect("publish");
        }
        fn receive(&mut self, seq: u64) -> bool {
            let reader = self.reader.as_mut().unwrap();
            let got = poll("mmf-frames", || match reader.try_next() {
                Ok(Some(frame)) => Some(stamps(&frame)),
                Ok(None) | Err(mmf::Error::WouldBlock) => None,
                Err(e) => panic!("try_next: {e}"),
            });
            expect_seq(got, seq)
        }
    }
}

mod mmf_lock {
    use super::*;
    use mmf::Mmf;

    pub struct Segments {
        out: Mmf,
        inbound: Option<Mmf>,
        inbound_name: String,
        seen: u32,
    }

    impl Segments {
        pub fn new(out: &str, inbound: &str, size: usize) -> Segments {
            Segments {
                out: Mmf::create(out, size).expect("create the segment"),
                inbound: None,
                inbound_name: inbound.to_owned(),
                seen: 0,
            }
        }
        fn open_inbound(&mut self) {
            let seg = Mmf::open(&self.inbound_name).expect("open the segment");
            self.seen = seg.write_seq();
            self.inbound = Some(seg);
        }
    }

    impl Link for Segments {
        fn connect(&mut self) {
            self.open_inbound();
        }
        fn send(&mut self, payload: &[u8]) {
            let mut guard = self.out.write().expect("write lock");
            guard[..payload.len()].copy_from_slice(payload);
        }
        fn receive(&mut self, seq: u64) -> bool {
            let seg = self.inbound.as_ref().unwrap();
            let seen = self.seen;
            self.seen = poll("mmf-lock", || {
                let now = seg.write_seq();
                (now != seen).then_some(now)
            });
            let guard = seg.read().expect("read lock");
            expect_seq(stamps(&guard), seq)
        }
    }
}

mod shm_raw_sync {
    use super::*;
    use raw_sync::locks::{LockImpl, LockInit, RwLock};
    use shared_memory::{Shmem, ShmemConf};

    /// `[pthread rwlock (raw_sync) | pad to 64 | seq: AtomicU64 | pad to 128 | payload]`.
    const SEQ_AT: usize = 64;
    const DATA_AT: usize = 128;

    pub struct Side {
        shm: Shmem,
        lock: Box<dyn LockImpl>,
    }

    impl Side {
        fn create(name: &str, size: usize) -> Side {
            assert!(RwLock::size_of(None) + 8 <= SEQ_AT);
            let shm = ShmemConf::new()
                .os_id(name)
                .size(DATA_AT + size)
                .create()
                .expect("create the shared_memory segment");
            // SAFETY: the mapping is DATA_AT + size bytes long and the lock takes at most
            // SEQ_AT bytes at its start (asserted above).
            let (lock, _) = unsafe { RwLock::new(shm.as_ptr(), shm.as_ptr().add(DATA_AT)) }
                .expect("init the raw_sync lock");
            Side { shm, lock }
        }
        fn open(name: &str) -> Side {
            let shm = ShmemConf::new()
                .os_id(name)
                .open()
                .expect("open the shared_memory segment");
            // SAFETY: the creator initialised a lock at the start of this mapping.
            let (lock, _) =
                unsafe { RwLock::from_existing(shm.as_ptr(), shm.as_ptr().add(DATA_AT)) }
                    .expect("attach the raw_sync lock");
            Side { shm, lock }
        }
        fn seq(&self) -> &AtomicU64 {
            // SAFETY: SEQ_AT is 8-aligned in a page-aligned mapping that outlives `self`.
            unsafe { &*(self.shm.as_ptr().add(SEQ_AT) as *const AtomicU64) }
        }
        fn data(&self) -> *mut u8 {
            // SAFETY: DATA_AT is within the mapping.
            unsafe { self.shm.as_ptr().add(DATA_AT) }
        }
    }

    pub struct Link2 {
        out: Side,
        inbound: Option<Side>,
        inbound_name: String,
        size: usize,
        seen: u64,
    }

    impl Link2 {
        pub fn new(out: &str, inbound: &str, size: usize) -> Link2 {
            Link2 {
                out: Side::create(out, size),
                inbound: None,
                inbound_name: inbound.to_owned(),
                size,
                seen: 0,
            }
        }
        fn open_inbound(&mut self) {
            self.inbound = Some(Side::open(&self.inbound_name));
        }
    }

    impl Link for Link2 {
        fn connect(&mut self) {
            self.open_inbound();
        }
        fn send(&mut self, payload: &[u8]) {
            let guard = self.out.lock.lock().expect("write lock");
            // SAFETY: the write lock is held; the payload fits (the segment was sized for it).
            unsafe {
                std::ptr::copy_nonoverlapping(payload.as_ptr(), self.out.data(), payload.len())
            };
            // Release: pairs with the reader's Acquire poll, so a reader that sees the new
            // count takes the read lock after this write lock's copy.
            self.out.seq().fetch_add(1, Ordering::Release);
            drop(guard);
        }
        fn receive(&mut self, seq: u64) -> bool {
            let side = self.inbound.as_ref().unwrap();
            let seen = self.seen;
            // Acquire: pairs with the sender's Release increment.
            self.seen = poll("shm-raw-sync", || {
                let now = side.seq().load(Ordering::Acquire);
                (now != seen).then_some(now)
            });
            let guard = side.lock.rlock().expect("read lock");
            // SAFETY: the read lock is held; the segment holds `size` payload bytes.
            let payload = unsafe { std::slice::from_raw_parts(side.data(), self.size) };
            let got = stamps(payload);
            drop(guard);
            expect_seq(got, seq)
        }
    }
}

mod iceoryx {
    use super::*;
    use iceoryx2::prelude::*;

    pub struct Link2 {
        // Field order is drop order: ports before their services, services before the node.
        publisher: iceoryx2::port::publisher::Publisher<ipc::Service, [u8], ()>,
        subscriber: Option<iceoryx2::port::subscriber::Subscriber<ipc::Service, [u8], ()>>,
        _out_service:
            iceoryx2::service::port_factory::publish_subscribe::PortFactory<ipc::Service, [u8], ()>,
        in_service: Option<
            iceoryx2::service::port_factory::publish_subscribe::PortFactory<ipc::Service, [u8], ()>,
        >,
        inbound_name: String,
        node: Node<ipc::Service>,
    }

    fn service(
        node: &Node<ipc::Service>,
        name: &str,
    ) -> iceoryx2::service::port_factory::publish_subscribe::PortFactory<ipc::Service, [u8], ()>
    {
        let name: ServiceName = name.try_into().expect("service name");
        node.service_builder(&name)
            .publish_subscribe::<[u8]>()
            .max_publishers(1)
            .max_subscribers(1)
            .history_size(0)
            .subscriber_max_buffer_size(1)
            .enable_safe_overflow(true)
            .open_or_create()
            .expect("iceoryx2 service")
    }

    impl Link2 {
        pub fn new(out: &str, inbound: &str, size: usize) -> Link2 {
            let node = NodeBuilder::new()
                .create::<ipc::Service>()
                .expect("iceoryx2 node");
            let out_service = service(&node, out);
            let publisher = out_service
                .publisher_builder()
                .initial_max_slice_len(size)
                .max_loaned_samples(1)
                .create()
                .expect("iceoryx2 publisher");
            Link2 {
                publisher,
                subscriber: None,
                _out_service: out_service,
                in_service: None,
                inbound_name: inbound.to_owned(),
                node,
            }
        }
        fn open_inbound(&mut self) {
            let svc = service(&self.node, &self.inbound_name);
            self.subscriber = Some(
                svc.subscriber_builder()
                    .buffer_size(1)
                    .create()
                    .expect("iceoryx2 subscriber"),
            );
            self.in_service = Some(svc);
        }
    }

    impl Link for Link2 {
        fn connect(&mut self) {
            self.open_inbound();
        }
        fn send(&mut self, payload: &[u8]) {
            let sample = self
                .publisher
                .loan_slice_uninit(payload.len())
                .expect("loan");
            sample.write_from_slice(payload).send().expect("send");
        }
        fn receive(&mut self, seq: u64) -> bool {
            let subscriber = self.subscriber.as_ref().unwrap();
            let got = poll("iceoryx2", || {
                subscriber
                    .receive()
                    .expect("receive")
                    .map(|sample| stamps(sample.payload()))
            });
            expect_seq(got, seq)
        }
    }
}

mod uds {
    use super::*;
    use std::os::fd::AsRawFd;

    pub struct Link2 {
        /// The parent's listener, until `connect` accepts the child.
        listener: Option<UnixListener>,
        stream: Option<UnixStream>,
        buf: Vec<u8>,
    }

    impl Link2 {
        pub fn listen(path: &Path, size: usize) -> Link2 {
            let _ = std::fs::remove_file(path);
            Link2 {
                listener: Some(UnixListener::bind(path).expect("uds bind")),
                stream: None,
                buf: vec![0; size],
            }
        }
        pub fn dial(path: &Path, size: usize) -> Link2 {
            Link2 {
                listener: None,
                stream: Some(UnixStream::connect(path).expect("uds connect")),
                buf: vec![0; size],
            }
        }
    }

    impl Link for Link2 {
        fn connect(&mut self) {
            if let Some(listener) = self.listener.take() {
                self.stream = Some(listener.accept().expect("uds accept").0);
            }
        }
        fn send(&mut self, payload: &[u8]) {
            let mut stream = self.stream.as_ref().unwrap();
            stream.write_all(payload).expect("uds write");
        }
        fn receive(&mut self, seq: u64) -> bool {
            let fd = self.stream.as_ref().unwrap().as_raw_fd();
            let mut filled = 0;
            let buf = &mut self.buf;
            poll("uds", || {
                // MSG_DONTWAIT: poll without sleeping in the kernel, like the other receivers;
                // the socket itself stays blocking for the sender's write_all.
                // SAFETY: the destination is the unfilled tail of `buf`, owned here.
                let n = unsafe {
                    libc::recv(
                        fd,
                        buf[filled..].as_mut_ptr().cast(),
                        buf.len() - filled,
                        libc::MSG_DONTWAIT,
                    )
                };
                if n > 0 {
                    filled += n as usize;
                } else if n == 0 {
                    panic!("uds: peer closed");
                }
                (filled == buf.len()).then_some(())
            });
            expect_seq(stamps(&self.buf), seq)
        }
    }
}

mod cacheline {
    use super::*;
    use shared_memory::{Shmem, ShmemConf};

    /// Two words of one cache line: the parent's at 0, the child's at 8.
    pub struct Line {
        shm: Shmem,
        mine: usize,
    }

    impl Line {
        pub fn create(name: &str) -> Line {
            let shm = ShmemConf::new()
                .os_id(name)
                .size(4096)
                .create()
                .expect("create the line");
            Line { shm, mine: 0 }
        }
        pub fn open(name: &str) -> Line {
            let shm = ShmemConf::new().os_id(name).open().expect("open the line");
            Line { shm, mine: 8 }
        }
        fn word(&self, at: usize) -> &AtomicU64 {
            // SAFETY: at is 0 or 8, 8-aligned in a page-aligned mapping owned by self.
            unsafe { &*(self.shm.as_ptr().add(at) as *const AtomicU64) }
        }
    }

    impl Link for Line {
        fn send(&mut self, payload: &[u8]) {
            // Release/Acquire: the only data handed over is the word itself.
            self.word(self.mine)
                .store(stamps(payload), Ordering::Release);
        }
        fn receive(&mut self, seq: u64) -> bool {
            let theirs = self.word(8 - self.mine);
            let got = poll("cacheline", || {
                let v = theirs.load(Ordering::Acquire);
                (v == seq || v == STOP).then_some(v)
            });
            expect_seq(got, seq)
        }
    }
}

// -------------------------------------------------------------------------------------------
// Processes

fn pin(cpu: usize) {
    // SAFETY: a zeroed cpu_set_t is a valid empty set; the call reads it for this thread.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(cpu, &mut set);
        if libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set) != 0 {
            panic!(
                "cannot pin to CPU {cpu}: {}",
                std::io::Error::last_os_error()
            );
        }
    }
}

fn names(tag: &str) -> (String, String) {
    let base = format!("mmfpeers-{tag}-{}", std::process::id());
    (format!("{base}-a"), format!("{base}-b"))
}

fn uds_path(base: &str) -> PathBuf {
    std::env::temp_dir().join(format!("{base}.sock"))
}

/// This process's side of `mechanism`: `out` is the name of what it sends on, `inbound` of
/// what the other process sends on; the parent creates first (`parent`), the child second.
fn open(
    mechanism: &str,
    out: &str,
    inbound: &str,
    base: &str,
    size: usize,
    parent: bool,
) -> Box<dyn Link> {
    match mechanism {
        "cacheline" if parent => Box::new(cacheline::Line::create(base)),
        "cacheline" => Box::new(cacheline::Line::open(base)),
        "mmf-frames" => Box::new(mmf_frames::Frames::new(out, inbound, size)),
        "mmf-lock" => Box::new(mmf_lock::Segments::new(out, inbound, size)),
        "shm-raw-sync" => Box::new(shm_raw_sync::Link2::new(out, inbound, size)),
        "iceoryx2" => Box::new(iceoryx::Link2::new(out, inbound, size)),
        "uds" if parent => Box::new(uds::Link2::listen(&uds_path(base), size)),
        "uds" => Box::new(uds::Link2::dial(&uds_path(base), size)),
        other => panic!("unknown mechanism {other}"),
    }
}

/// The child: opens the parent's outbound side, creates its own, says "ready", then echoes
/// until the stop stamp.
fn child(role: &str) {
    let size: usize = std::env::var(SIZE).unwrap().parse().unwrap();
    let base = std::env::var(NAME).unwrap();
    if let Ok(cpu) = std::env::var(CPU) {
        pin(cpu.parse().unwrap());
    }
    let (a, b) = (format!("{base}-a"), format!("{base}-b"));
    let mut link = open(role, &b, &a, &base, size, false);
    link.connect();
    println!("ready");
    std::io::stdout().flush().unwrap();
    let mut payload = payload(size);
    let mut seq = 1;
    loop {
        let go_on = link.receive(seq);
        let answer = if go_on { seq } else { STOP };
        stamp(&mut payload, answer);
        link.send(&payload);
        if !go_on {
            break;
        }
        seq += 1;
    }
}

fn wait_ready(child: &mut Child) {
    use std::io::Read as _;
    let out = child.stdout.as_mut().unwrap();
    let mut line = Vec::new();
    let mut byte = [0u8; 1];
    while out.read(&mut byte).expect("child stdout") == 1 {
        if byte[0] == b'\n' {
            break;
        }
        line.push(byte[0]);
    }
    assert_eq!(line, b"ready", "child did not get ready");
}

/// How many round trips to time at a size: about a second of work per mechanism at the
/// slowest, enough events for a stable p99.
fn rounds(size: usize) -> (usize, usize) {
    match size {
        0..=1024 => (20_000, 200_000),
        1025..=65536 => (5_000, 50_000),
        // Enough rounds that p99 is not one of a handful of the machine's hiccups.
        _ => (50, 1000),
    }
}

pub struct Sample {
    pub mechanism: String,
    pub size: usize,
    pub p50_ns: f64,
    pub p99_ns: f64,
    pub rounds: usize,
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

/// Times `timed` round trips after `warm` untimed ones; returns one-way figures.
fn drive(link: &mut dyn Link, size: usize, warm: usize, timed: usize) -> (f64, f64) {
    let mut payload = payload(size);
    let mut one_way = Vec::with_capacity(timed);
    let mut seq = 1;
    // One clock read per round trip: each sample runs from the previous read to this one.
    let mut t = Instant::now();
    for i in 0..warm + timed {
        stamp(&mut payload, seq);
        link.send(&payload);
        assert!(link.receive(seq), "child stopped early");
        let now = Instant::now();
        if i >= warm {
            one_way.push((now - t).as_nanos() as f64 / 2.0);
        }
        t = now;
        seq += 1;
    }
    stamp(&mut payload, STOP);
    link.send(&payload);
    assert!(!link.receive(seq), "child did not stop");
    one_way.sort_by(f64::total_cmp);
    (percentile(&one_way, 0.5), percentile(&one_way, 0.99))
}

/// The memcpy floor: the same stamped copy and check, in one process, twice per round trip.
fn memcpy_floor(size: usize, warm: usize, timed: usize) -> (f64, f64) {
    let mut src = payload(size);
    let mut dst = payload(size);
    let mut back = payload(size);
    let mut one_way = Vec::with_capacity(timed);
    let mut t = Instant::now();
    for i in 0..warm + timed {
        let seq = i as u64 + 1;
        stamp(&mut src, seq);
        dst.copy_from_slice(std::hint::black_box(&src));
        assert_eq!(stamps(std::hint::black_box(&dst)), seq);
        back.copy_from_slice(std::hint::black_box(&dst));
        assert_eq!(stamps(std::hint::black_box(&back)), seq);
        let now = Instant::now();
        if i >= warm {
            one_way.push((now - t).as_nanos() as f64 / 2.0);
        }
        t = now;
    }
    one_way.sort_by(f64::total_cmp);
    (percentile(&one_way, 0.5), percentile(&one_way, 0.99))
}

fn measure(mechanism: &str, size: usize, cpus: Option<(usize, usize)>) -> Sample {
    let (warm, timed) = rounds(size);
    let (p50, p99) = if mechanism == "memcpy" {
        memcpy_floor(size, warm, timed)
    } else {
        let (a, b) = names(mechanism);
        let base = a.trim_end_matches("-a").to_owned();
        // The parent's outbound side exists before the child starts; its inbound side is
        // opened once the child says it is ready.
        let mut link = open(mechanism, &a, &b, &base, size, true);
        let mut cmd = Command::new(std::env::current_exe().unwrap());
        cmd.env(ROLE, mechanism)
            .env(SIZE, size.to_string())
            .env(NAME, &base)
            .stdout(Stdio::piped());
        if let Some((_, theirs)) = cpus {
            cmd.env(CPU, theirs.to_string());
        }
        let mut kid = cmd.spawn().expect("spawn the child");
        wait_ready(&mut kid);
        link.connect();
        let figures = drive(link.as_mut(), size, warm, timed);
        let status = kid.wait().expect("wait for the child");
        assert!(status.success(), "{mechanism} child failed: {status}");
        drop(link);
        let _ = std::fs::remove_file(uds_path(&base));
        figures
    };
    Sample {
        mechanism: mechanism.to_owned(),
        size,
        p50_ns: p50,
        p99_ns: p99,
        rounds: timed,
    }
}

// -------------------------------------------------------------------------------------------
// Orchestration and report

struct Args {
    runs: usize,
    only: Vec<String>,
    sizes: Vec<usize>,
    out: PathBuf,
    cpus: Option<(usize, usize)>,
}

fn parse_args() -> Args {
    let mut args = Args {
        runs: 3,
        only: MECHANISMS.iter().map(|s| s.to_string()).collect(),
        sizes: SIZES.to_vec(),
        out: PathBuf::from("target/bench-peers"),
        cpus: Some((0, 1)),
    };
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        let mut value = || {
            it.next()
                .unwrap_or_else(|| usage(&format!("{arg} needs a value")))
        };
        match arg.as_str() {
            "--runs" => args.runs = value().parse().unwrap_or_else(|_| usage("--runs N")),
            "--only" => args.only = value().split(',').map(str::to_owned).collect(),
            "--sizes" => {
                args.sizes = value()
                    .split(',')
                    .map(|s| s.parse().unwrap_or_else(|_| usage("--sizes 64,8192")))
                    .collect()
            }
            "--out" => args.out = PathBuf::from(value()),
            "--cpus" => {
                let v = value();
                args.cpus = if v == "none" {
                    None
                } else {
                    let (a, b) = v.split_once(',').unwrap_or_else(|| usage("--cpus A,B"));
                    Some((
                        a.parse().unwrap_or_else(|_| usage("--cpus A,B")),
                        b.parse().unwrap_or_else(|_| usage("--cpus A,B")),
                    ))
                }
            }
            "-h" | "--help" => usage(""),
            other => usage(&format!("unknown argument {other}")),
        }
    }
    for m in &args.only {
        if !MECHANISMS.contains(&m.as_str()) {
            usage(&format!("unknown mechanism {m}"));
        }
    }
    if args.sizes.iter().any(|&s| s < 16) {
        usage("sizes must be at least 16 bytes (two 8-byte stamps)");
    }
    args
}

fn usage(problem: &str) -> ! {
    if !problem.is_empty() {
        eprintln!("error: {problem}");
    }
    eprintln!(
        "usage: mmf-bench-peers [--runs N] [--only {}] [--sizes 64,8192,6220800] \
         [--cpus A,B|none] [--out DIR]",
        MECHANISMS.join(",")
    );
    std::process::exit(if problem.is_empty() { 0 } else { 2 });
}

fn json_line(run: usize, s: &Sample, cpus: Option<(usize, usize)>) -> String {
    format!(
        "{{\"run\":{run},\"mechanism\":\"{}\",\"size\":{},\"p50_ns\":{:.1},\"p99_ns\":{:.1},\"rounds\":{},\"cpus\":{}}}",
        s.mechanism,
        s.size,
        s.p50_ns,
        s.p99_ns,
        s.rounds,
        match cpus {
            Some((a, b)) => format!("[{a},{b}]"),
            None => "null".to_owned(),
        }
    )
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

fn human_ns(ns: f64) -> String {
    if ns >= 1e6 {
        format!("{:.2} ms", ns / 1e6)
    } else if ns >= 1e3 {
        format!("{:.1} µs", ns / 1e3)
    } else {
        format!("{ns:.0} ns")
    }
}

fn human_size(size: usize) -> String {
    match size {
        6_220_800 => "6,220,800 B (1080p RGB)".to_owned(),
        s if s >= 1024 && s % 1024 == 0 => format!("{} KiB", s / 1024),
        s => format!("{s} B"),
    }
}

/// What the README shows: a row per mechanism, a column per size, each cell the median p50
/// over the runs and, below the floors, the median of its per-run ratios to shm-raw-sync.
fn compact(args: &Args, runs: &[Vec<Sample>]) -> String {
    let label = |m: &str| {
        match m {
            "memcpy" => "floor: warm memcpy (one process)",
            "cacheline" => "floor: cache-line ping-pong",
            "mmf-frames" => "**mmf** frame channel",
            "mmf-lock" => "**mmf** segment + lock",
            "shm-raw-sync" => "shared_memory 0.12 + raw_sync 0.1",
            "iceoryx2" => "iceoryx2 0.10",
            "uds" => "Unix domain socket",
            other => other,
        }
        .to_owned()
    };
    let p50 = |run: &Vec<Sample>, m: &str, size: usize| {
        run.iter()
            .find(|s| s.mechanism == m && s.size == size)
            .map(|s| s.p50_ns)
    };
    let mut md = String::from("| one way, p50 (p99) |");
    for &size in &args.sizes {
        md.push_str(&format!(" {} |", human_size(size)));
    }
    md.push_str("\n|---|");
    for _ in &args.sizes {
        md.push_str("---:|");
    }
    md.push('\n');
    for m in &args.only {
        md.push_str(&format!("| {} |", label(m)));
        for &size in &args.sizes {
            let mid = median(runs.iter().filter_map(|r| p50(r, m, size)).collect());
            let p99 = median(
                runs.iter()
                    .filter_map(|r| r.iter().find(|s| &s.mechanism == m && s.size == size))
                    .map(|s| s.p99_ns)
                    .collect(),
            );
            let ratio: Vec<f64> = runs
                .iter()
                .filter_map(|r| Some(p50(r, m, size)? / p50(r, "shm-raw-sync", size)?))
                .collect();
            let shown_ratio = !ratio.is_empty() && m != "memcpy" && m != "cacheline";
            md.push_str(&format!(
                " {} ({}){} |",
                human_ns(mid),
                human_ns(p99),
                if shown_ratio {
                    format!(" = {:.2}x", median(ratio))
                } else {
                    String::new()
                }
            ));
        }
        md.push('\n');
    }
    md
}

/// Per size: every mechanism's median p50/p99 over the runs, and the medians over the runs of
/// its per-run ratio to each baseline (each ratio taken within one run).
fn report(args: &Args, runs: &[Vec<Sample>]) -> String {
    let baselines = ["shm-raw-sync", "iceoryx2", "memcpy"];
    let mut md = String::new();
    md.push_str(&format!(
        "One-way latency (half a round trip, payload copied in and checked), median over {} runs; \
         ratios are medians of per-run ratios. {}.\n\n",
        runs.len(),
        match args.cpus {
            Some((a, b)) => format!("Parent pinned to CPU {a}, child to CPU {b}"),
            None => "Processes not pinned".to_owned(),
        }
    ));
    md.push_str("| size | mechanism | p50 | p99 |");
    for b in baselines {
        md.push_str(&format!(" ÷ {b} |"));
    }
    md.push_str("\n|---|---|---:|---:|");
    for _ in baselines {
        md.push_str("---:|");
    }
    md.push('\n');
    let find = |run: &Vec<Sample>, m: &str, size: usize| {
        run.iter()
            .find(|s| s.mechanism == m && s.size == size)
            .map(|s| s.p50_ns)
    };
    for &size in &args.sizes {
        for m in &args.only {
            let p50 = median(runs.iter().filter_map(|r| find(r, m, size)).collect());
            let p99 = median(
                runs.iter()
                    .filter_map(|r| r.iter().find(|s| &s.mechanism == m && s.size == size))
                    .map(|s| s.p99_ns)
                    .collect(),
            );
            md.push_str(&format!(
                "| {} | {m} | {} | {} |",
                human_size(size),
                human_ns(p50),
                human_ns(p99)
            ));
            for b in baselines {
                let ratios: Vec<f64> = runs
                    .iter()
                    .filter_map(|r| Some(find(r, m, size)? / find(r, b, size)?))
                    .collect();
                if ratios.is_empty() {
                    md.push_str(" – |");
                } else {
                    md.push_str(&format!(" {:.2}x |", median(ratios)));
                }
            }
            md.push('\n');
        }
    }
    md
}

fn main() {
    // iceoryx2 warns on stderr that it found no config file and uses its defaults: expected.
    iceoryx2::prelude::set_log_level(iceoryx2::prelude::LogLevel::Error);
    if let Ok(role) = std::env::var(ROLE) {
        child(&role);
        return;
    }
    let args = parse_args();
    let cpus = args.cpus.filter(|_| {
        let online = std::thread::available_parallelism().map_or(1, |n| n.get());
        if online < 2 {
            eprintln!("note: fewer than 2 CPUs available; the processes are not pinned");
        }
        online >= 2
    });
    if let Some((mine, _)) = cpus {
        pin(mine);
    }
    std::fs::create_dir_all(&args.out).expect("create the output folder");
    let jsonl = args.out.join("results.jsonl");
    let mut log = std::fs::File::create(&jsonl).expect("create results.jsonl");
    let mut runs = Vec::new();
    for run in 1..=args.runs {
        let mut samples = Vec::new();
        for &size in &args.sizes {
            for m in &args.only {
                let s = measure(m, size, cpus);
                let line = json_line(run, &s, cpus);
                eprintln!("{line}");
                writeln!(log, "{line}").unwrap();
                samples.push(s);
            }
        }
        runs.push(samples);
    }
    let args = Args { cpus, ..args };
    let table = format!(
        "{}\nRatios: medians over the runs of the per-run ratio to shared_memory + raw_sync.\n\n{}",
        compact(&args, &runs),
        report(&args, &runs)
    );
    println!("{table}");
    std::fs::write(args.out.join("peers.md"), &table).unwrap();
    let svg = args.out.join("peers.svg");
    chart::draw(&svg, &args.sizes, &args.only, &runs).expect("draw the chart");
    eprintln!(
        "wrote {}, {} and {}",
        jsonl.display(),
        args.out.join("peers.md").display(),
        svg.display()
    );
}
