//! A synthetic camera and consumer processes sharing frames through an `mmf` frame channel.
//!
//! ```text
//! cargo run --release --example camera -- [--width 1920] [--height 1080] [--fps 60]
//!                                         [--consumers 3] [--seconds 10] [--name NAME]
//! cargo run --release --example camera -- --consumers 0 --name NAME   # the camera alone
//! cargo run --release --example camera -- --consumer NAME [--seconds 30]
//! ```
//!
//! The camera renders a moving test pattern (RGB, 3 bytes per pixel) straight into the
//! channel's shared memory and publishes it at the requested rate; each consumer is a separate
//! process (this same binary, started with `--consumer`) that waits for every new frame, checks
//! its stamp, and reports frames received and skipped, fps, publish-to-read latency and CPU
//! use. The tests run the same code (`tests/channel.rs` includes this file).
//!
//! Start order and restarts: a consumer started on its own (`--consumer NAME`) waits for the
//! camera (`FrameReader::open_wait`); kill the camera (`kill -9`) and start it again with the
//! same `--name`, and the new camera takes the dead one's channel over while the consumer
//! sees `WriterGone`, reopens and goes on (its report counts the `restarts`).

use std::io::BufRead;
use std::process::{Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use mmf::channel::monotonic_ns;
use mmf::{Error, FrameMeta, FrameReader, FrameSpec, FrameWriter};

/// What to run.
#[derive(Debug, Clone)]
pub struct Config {
    pub width: u32,
    pub height: u32,
    pub fps: f64,
    pub consumers: usize,
    pub seconds: f64,
    pub name: String,
}

/// One consumer's figures.
#[derive(Debug, Clone, PartialEq)]
pub struct Report {
    pub frames: u64,
    pub skipped: u64,
    pub fps: f64,
    pub latency_p50_us: f64,
    pub latency_p99_us: f64,
    /// Process CPU time / wall time, in percent (`NaN` where the platform cannot tell).
    pub cpu_percent: f64,
    /// Cameras followed after the first (each a `WriterGone`, then a reopen).
    pub restarts: u64,
}

impl Report {
    /// One line, parsed back by [`Report::from_line`].
    pub fn to_line(&self) -> String {
        format!(
            "frames={} skipped={} fps={:.2} p50_us={:.1} p99_us={:.1} cpu={:.2} restarts={}",
            self.frames,
            self.skipped,
            self.fps,
            self.latency_p50_us,
            self.latency_p99_us,
            self.cpu_percent,
            self.restarts
        )
    }

    pub fn from_line(line: &str) -> Option<Report> {
        let field = |key: &str| -> Option<f64> {
            line.split_whitespace()
                .find_map(|kv| kv.strip_prefix(key)?.strip_prefix('='))?
                .parse()
                .ok()
        };
        Some(Report {
            frames: field("frames")? as u64,
            skipped: field("skipped")? as u64,
            fps: field("fps")?,
            latency_p50_us: field("p50_us")?,
            latency_p99_us: field("p99_us")?,
            cpu_percent: field("cpu")?,
            restarts: field("restarts")? as u64,
        })
    }
}

/// The whole run.
#[derive(Debug)]
pub struct Summary {
    pub published: u64,
    pub camera_cpu_percent: f64,
    pub consumers: Vec<Report>,
}

/// Reader places the camera keeps beyond its own consumers, for outside readers.
pub const ONLOOKERS: usize = 4;

/// Pixel format code published with each frame: rgb24 (FourCC `RGB3`, the code this demo
/// has always written), so `mmf frames snapshot` and ffmpeg know how to read it.
pub const RGB24: u32 = mmf::channel::PixelFormat::Rgb24.code();

/// Renders frame `n`: colour bars scrolling sideways and a white square bouncing around.
/// The first 8 bytes carry `n` so a consumer can check the frame is the one announced.
fn render(n: u64, width: usize, height: usize, buf: &mut [u8]) -> usize {
    const BARS: [[u8; 3]; 8] = [
        [235, 235, 235],
        [235, 235, 16],
        [16, 235, 235],
        [16, 235, 16],
        [235, 16, 235],
        [235, 16, 16],
        [16, 16, 235],
        [16, 16, 16],
    ];
    let row_len = width * 3;
    let len = row_len * height;
    let frame = &mut buf[..len];
    // One shifted row, then copied down: cheap enough for 1080p at 60 fps.
    let shift = (n as usize * 4) % width.max(1);
    {
        let row = &mut frame[..row_len];
        for x in 0..width {
            let bar = ((x + shift) * 8 / width.max(1)) % 8;
            row[x * 3..x * 3 + 3].copy_from_slice(&BARS[bar]);
        }
    }
    for y in 1..height {
        frame.copy_within(..row_len, y * row_len);
    }
    let side = (height / 8).max(1).min(width);
    let span_x = (width - side).max(1);
    let span_y = (height - side).max(1);
    let bounce = |t: usize, span: usize| {
        let t = t % (2 * span);
        if t < span {
            t
        } else {
            2 * span - t
        }
    };
    let (bx, by) = (
        bounce(n as usize * 7, span_x),
        bounce(n as usize * 5, span_y),
    );
    for y in by..(by + side).min(height) {
        let start = y * row_len + bx * 3;
        let end = (start + side * 3).min((y + 1) * row_len);
        frame[start..end].fill(255);
    }
    if len >= 8 {
        frame[..8].copy_from_slice(&n.to_le_bytes());
    }
    len
}

/// Runs the camera: creates the channel, starts `consumers` consumers through `start`
/// (each call blocks until that consumer's report), publishes until every consumer is done.
pub fn run<F>(config: &Config, start: F) -> Result<Summary, Error>
where
    F: Fn(&Config, usize) -> Report + Sync,
{
    let (width, height) = (config.width as usize, config.height as usize);
    let frame_len = width * height * 3;
    let mut writer = FrameWriter::create(
        &config.name,
        // Reader places beyond the consumers, for onlookers such as `mmf frames watch`,
        // `mmf frames snapshot` or consumers in other languages.
        FrameSpec::new(frame_len.max(8)).max_readers(config.consumers + ONLOOKERS),
    )?;
    writer.set_meta(FrameMeta {
        width: config.width,
        height: config.height,
        pixel_format: RGB24,
        tag: 0,
    });
    let period = Duration::from_secs_f64(1.0 / config.fps.max(0.1));
    let cpu_start = cpu_time();
    let wall_start = Instant::now();
    let consumers = thread::scope(|scope| -> Result<Vec<Report>, Error> {
        let handles: Vec<_> = (0..config.consumers)
            .map(|i| {
                let start = &start;
                scope.spawn(move || start(config, i))
            })
            .collect();
        // Consumers run `seconds` from when they open; stop at the latest a while after that.
        // Without consumers of its own the camera runs `seconds` for outside readers.
        let alone = handles.is_empty();
        let slack = if alone { 0.0 } else { 60.0 };
        let give_up = Instant::now() + Duration::from_secs_f64(config.seconds + slack);
        let mut next = Instant::now();
        let mut n = 0u64;
        while (alone || !handles.iter().all(|h| h.is_finished())) && Instant::now() < give_up {
            n += 1;
            writer.set_meta(FrameMeta {
                width: config.width,
                height: config.height,
                pixel_format: RGB24,
                tag: n,
            });
            writer.publish_with(|buf| render(n, width, height, buf))?;
            next += period;
            let now = Instant::now();
            if next > now {
                thread::sleep(next - now);
            } else {
                next = now; // running late: do not try to catch up in a burst
            }
        }
        Ok(handles
            .into_iter()
            .map(|h| h.join().expect("consumer thread"))
            .collect())
    })?;
    let wall = wall_start.elapsed();
    Ok(Summary {
        published: writer.seq(),
        camera_cpu_percent: cpu_percent(cpu_start, wall),
        consumers,
    })
}

/// A consumer: reads every new frame for `seconds`, then reports. It may start before the
/// camera (it waits for the channel with `open_wait`) and follows a camera that crashes and
/// is started again (on `WriterGone` it opens the channel again, waiting for the new one).
pub fn consumer(name: &str, seconds: f64) -> Report {
    // `None` once the camera went away and no new one came in time.
    let mut reader = Some(
        FrameReader::open_wait(name, CAMERA_WAIT)
            .unwrap_or_else(|e| panic!("opening frame channel {name:?}: {e}")),
    );
    let cpu_start = cpu_time();
    let start = Instant::now();
    let end = start + Duration::from_secs_f64(seconds);
    let mut latencies_ns = Vec::new();
    let mut last_frame = start;
    // Counts of the cameras before the current one (a reader counts its own channel only).
    let (mut frames, mut skipped, mut restarts) = (0, 0, 0);
    while let Some(current) = reader.as_mut().filter(|_| Instant::now() < end) {
        // The frame borrows the reader: decide here, reopen after the match.
        let camera_gone = match current.wait_next(Duration::from_millis(200)) {
            Ok(frame) => {
                let now = monotonic_ns();
                latencies_ns.push(now.saturating_sub(frame.timestamp_ns()));
                // Use the frame: check its stamp and touch a pixel in every row.
                if frame.len() >= 8 {
                    let stamp = u64::from_le_bytes(frame[..8].try_into().expect("8 bytes"));
                    assert_eq!(stamp, frame.tag(), "frame stamp mismatch");
                }
                let row = frame.width() as usize * 3;
                let mut sum = 0u64;
                for y in 0..frame.height() as usize {
                    sum += u64::from(frame.get(y * row + row / 2).copied().unwrap_or(0));
                }
                std::hint::black_box(sum);
                last_frame = Instant::now();
                false
            }
            // The camera stopped or crashed: wait for the next one below.
            Err(Error::WriterGone { .. }) => true,
            Err(Error::Timeout { .. }) if last_frame.elapsed() > Duration::from_secs(5) => break,
            Err(Error::Timeout { .. }) => false,
            Err(e) => panic!("reading frames: {e}"),
        };
        if camera_gone {
            // Closed before waiting: on Windows the old channel's name lives as long as a
            // handle, and the new camera cannot take it over until then.
            if let Some(old) = reader.take() {
                frames += old.received();
                skipped += old.skipped();
            }
            let left = end.saturating_duration_since(Instant::now());
            match FrameReader::open_wait(name, left.min(CAMERA_WAIT)) {
                Ok(next) => {
                    restarts += 1;
                    reader = Some(next);
                }
                // No camera came back in time: the stream is over (`reader` stays None).
                Err(Error::Timeout { .. }) => {}
                Err(e) => panic!("reopening frame channel {name:?}: {e}"),
            }
        }
    }
    let wall = start.elapsed();
    latencies_ns.sort_unstable();
    let pct = |p: f64| -> f64 {
        if latencies_ns.is_empty() {
            return 0.0;
        }
        let i = ((latencies_ns.len() - 1) as f64 * p).round() as usize;
        latencies_ns[i] as f64 / 1000.0
    };
    if let Some(last) = &reader {
        frames += last.received();
        skipped += last.skipped();
    }
    Report {
        frames,
        skipped,
        fps: frames as f64 / wall.as_secs_f64(),
        latency_p50_us: pct(0.50),
        latency_p99_us: pct(0.99),
        cpu_percent: cpu_percent(cpu_start, wall),
        restarts,
    }
}

/// How long a consumer waits for a camera to appear, or to come back after it went away.
const CAMERA_WAIT: Duration = Duration::from_secs(10);

fn cpu_percent(start: Option<Duration>, wall: Duration) -> f64 {
    match (start, cpu_time()) {
        (Some(a), Some(b)) if !wall.is_zero() => {
            b.saturating_sub(a).as_secs_f64() / wall.as_secs_f64() * 100.0
        }
        _ => f64::NAN,
    }
}

/// CPU time (user + system) this process has used so far.
#[cfg(target_os = "linux")]
fn cpu_time() -> Option<Duration> {
    let mut usage = std::mem::MaybeUninit::<libc::rusage>::uninit();
    // SAFETY: getrusage writes a full rusage into the pointer, which is valid and writable.
    let rc = unsafe { libc::getrusage(libc::RUSAGE_SELF, usage.as_mut_ptr()) };
    if rc != 0 {
        return None;
    }
    // SAFETY: getrusage returned 0, so it initialised the struct.
    let usage = unsafe { usage.assume_init() };
    let tv = |t: libc::timeval| Duration::new(t.tv_sec as u64, t.tv_usec as u32 * 1000);
    Some(tv(usage.ru_utime) + tv(usage.ru_stime))
}

/// CPU time (user + kernel) this process has used so far.
#[cfg(windows)]
fn cpu_time() -> Option<Duration> {
    use windows_sys::Win32::Foundation::FILETIME;
    use windows_sys::Win32::System::Threading::{GetCurrentProcess, GetProcessTimes};
    let zero = FILETIME {
        dwLowDateTime: 0,
        dwHighDateTime: 0,
    };
    let (mut created, mut exited, mut kernel, mut user) = (zero, zero, zero, zero);
    // SAFETY: GetCurrentProcess has no preconditions; it returns a pseudo-handle that needs
    // no closing.
    let process = unsafe { GetCurrentProcess() };
    // SAFETY: `process` is valid for the call; the four FILETIMEs are valid and writable.
    let ok = unsafe { GetProcessTimes(process, &mut created, &mut exited, &mut kernel, &mut user) };
    if ok == 0 {
        return None;
    }
    let ticks = |t: FILETIME| (u64::from(t.dwHighDateTime) << 32) | u64::from(t.dwLowDateTime);
    // FILETIME counts 100 ns units.
    Some(Duration::from_nanos((ticks(kernel) + ticks(user)) * 100))
}

#[cfg(not(any(target_os = "linux", windows)))]
fn cpu_time() -> Option<Duration> {
    None
}

fn parse_args(args: &[String]) -> Result<(Config, Option<String>), String> {
    let mut config = Config {
        width: 1920,
        height: 1080,
        fps: 60.0,
        consumers: 3,
        seconds: 10.0,
        name: format!("mmf-camera-{}", std::process::id()),
    };
    let mut consumer_of = None;
    let mut it = args.iter();
    while let Some(flag) = it.next() {
        let mut value = || it.next().ok_or_else(|| format!("{flag} needs a value"));
        let bad = |v: &str| format!("bad value {v:?} for {flag}");
        match flag.as_str() {
            "--width" => config.width = value()?.parse().map_err(|_| bad(flag))?,
            "--height" => config.height = value()?.parse().map_err(|_| bad(flag))?,
            "--fps" => config.fps = value()?.parse().map_err(|_| bad(flag))?,
            "--consumers" => config.consumers = value()?.parse().map_err(|_| bad(flag))?,
            "--seconds" => config.seconds = value()?.parse().map_err(|_| bad(flag))?,
            "--name" => config.name = value()?.clone(),
            "--consumer" => consumer_of = Some(value()?.clone()),
            "-h" | "--help" => return Err(
                "usage: camera [--width N] [--height N] [--fps F] [--consumers N] [--seconds S] [--name NAME]
       camera --consumer NAME [--seconds S]"
                    .into(),
            ),
            other => return Err(format!("unknown flag {other:?} (try --help)")),
        }
    }
    if config.width == 0 || config.height == 0 || config.fps <= 0.0 || config.seconds <= 0.0 {
        return Err("width, height, fps and seconds must be positive".into());
    }
    // Reader places are kept for onlookers (see `run`).
    if config.consumers + ONLOOKERS > mmf::channel::MAX_READERS {
        return Err(format!(
            "--consumers must be 0 to {}",
            mmf::channel::MAX_READERS - ONLOOKERS
        ));
    }
    Ok((config, consumer_of))
}

/// Starts this binary as a consumer process and waits for its report line.
fn consumer_process(config: &Config, index: usize) -> Report {
    let exe = std::env::current_exe().expect("current_exe");
    let mut child = Command::new(exe)
        .args([
            "--consumer",
            &config.name,
            "--seconds",
            &config.seconds.to_string(),
        ])
        .stdout(Stdio::piped())
        .spawn()
        .expect("spawn consumer");
    let stdout = child.stdout.take().expect("piped stdout");
    let line = std::io::BufReader::new(stdout)
        .lines()
        .map_while(Result::ok)
        .find(|l| l.starts_with("report "));
    let status = child.wait().expect("wait for consumer");
    assert!(status.success(), "consumer {index} failed: {status}");
    line.and_then(|l| Report::from_line(&l))
        .unwrap_or_else(|| panic!("consumer {index} sent no report"))
}

#[allow(dead_code)] // tests include this file for `run` and `consumer` only
fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (config, consumer_of) = match parse_args(&args) {
        Ok(parsed) => parsed,
        Err(message) => {
            eprintln!("{message}");
            std::process::exit(2);
        }
    };
    if let Some(name) = consumer_of {
        println!("report {}", consumer(&name, config.seconds).to_line());
        return;
    }
    println!(
        "camera: {}x{} RGB ({} bytes/frame) at {} fps for {} s, {} consumer processes",
        config.width,
        config.height,
        config.width as usize * config.height as usize * 3,
        config.fps,
        config.seconds,
        config.consumers
    );
    let summary = match run(&config, consumer_process) {
        Ok(summary) => summary,
        Err(e) => {
            eprintln!("camera failed: {e}");
            std::process::exit(1);
        }
    };
    println!(
        "camera: published {} frames, CPU {:.1}%",
        summary.published, summary.camera_cpu_percent
    );
    println!(
        "{:>8} {:>8} {:>8} {:>7} {:>12} {:>12} {:>6}",
        "consumer", "frames", "skipped", "fps", "p50 latency", "p99 latency", "CPU"
    );
    for (i, r) in summary.consumers.iter().enumerate() {
        println!(
            "{:>8} {:>8} {:>8} {:>7.1} {:>9.1} us {:>9.1} us {:>5.1}%",
            i, r.frames, r.skipped, r.fps, r.latency_p50_us, r.latency_p99_us, r.cpu_percent
        );
    }
}
