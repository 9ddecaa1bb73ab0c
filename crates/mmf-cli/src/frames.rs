//! `mmf frames …`: watch a channel, snapshot its newest frame as a PNG, and pipe raw frames
//! out of and into channels, so that ffmpeg can be a camera or a consumer.

use std::io::{self, IsTerminal, Read, Write};
use std::time::{Duration, Instant};

use clap::{Args, Subcommand};
use mmf::channel::{monotonic_ns, PixelFormat};
use mmf::inspect;
use mmf::{Error, FrameMeta, FrameReader, FrameReaderOptions, FrameSpec, FrameWriter};
use serde_json::json;

use crate::report::format_name;
use crate::{Failure, Named, Output};

#[derive(Subcommand)]
pub enum FramesCommand {
    /// Live frame rate, skipped frames and publish-to-read latency of a channel
    #[command(after_help = "\
Attaches as one reader (it takes one of the channel's reader places) and prints a refreshing \
line once a second; with --json, one JSON record per second and a final one.

Examples:
  mmf frames watch cam0
  mmf frames watch cam0 --seconds 5 --json")]
    Watch(WatchArgs),
    /// Write the newest frame to a PNG (rgb24, bgr24, rgba, bgra, gray)
    #[command(after_help = "\
Width, height and pixel format come from the frame's metadata, as the producer published it.

Examples:
  mmf frames snapshot cam0 cam0.png")]
    Snapshot(SnapshotArgs),
    /// Raw frames to standard output, for `ffmpeg -f rawvideo`
    #[command(after_help = "\
Without --every, each frame written is the newest when the previous one was written: a slow \
consumer skips frames and never falls behind. With --every, a skipped frame is an error.
Ends after --count frames, or when the writer closes the channel.

Examples:
  mmf frames cat cam0 --count 100 > frames.raw
  mmf frames cat cam0 | ffmpeg -f rawvideo -pix_fmt rgb24 -s 1920x1080 -i - out.mp4")]
    Cat(CatArgs),
    /// Raw frames from standard input into a new channel, until end of input
    #[command(after_help = "\
Creates the channel (it is removed again when input ends), reads whole frames of \
width x height in the pixel format from standard input and publishes each one.

Examples:
  ffmpeg -re -f lavfi -i testsrc=size=320x240:rate=30 -f rawvideo -pix_fmt rgb24 - \\
      | mmf frames publish cam0 --width 320 --height 240 --pix-fmt rgb24")]
    Publish(PublishArgs),
}

#[derive(Args)]
pub struct WatchArgs {
    /// Channel name
    name: String,
    /// Stop after this many frames
    #[arg(long)]
    count: Option<u64>,
    /// Stop after this many seconds
    #[arg(long)]
    seconds: Option<f64>,
    /// Seconds between reports
    #[arg(long, default_value_t = 1.0)]
    interval: f64,
    #[command(flatten)]
    output: Output,
}

#[derive(Args)]
pub struct SnapshotArgs {
    /// Channel name
    name: String,
    /// PNG file to write
    out: std::path::PathBuf,
    /// Longest wait for a first frame, in milliseconds
    #[arg(long, default_value_t = 2000)]
    timeout: u64,
}

#[derive(Args)]
pub struct CatArgs {
    /// Channel name
    name: String,
    /// Fail if a frame is skipped (the consumer is slower than the producer)
    #[arg(long)]
    every: bool,
    /// Stop after this many frames
    #[arg(long)]
    count: Option<u64>,
    /// Longest wait for a frame, in milliseconds
    #[arg(long, default_value_t = 5000)]
    timeout: u64,
}

#[derive(Args)]
pub struct PublishArgs {
    /// Channel name
    name: String,
    /// Frame width in pixels
    #[arg(long, short = 'W')]
    width: u32,
    /// Frame height in pixels
    #[arg(long, short = 'H')]
    height: u32,
    /// Pixel format, an ffmpeg -pix_fmt name: rgb24, bgr24, rgba, bgra, gray, gray16le,
    /// yuyv422, nv12, yuv420p
    #[arg(long)]
    pix_fmt: PixelFormat,
    /// Readers the channel makes room for
    #[arg(long, default_value_t = 4)]
    max_readers: usize,
    /// Before the first frame, wait until this many readers have attached
    #[arg(long, default_value_t = 0)]
    wait_readers: usize,
    /// Permission bits of the channel, octal
    #[arg(long, default_value = "644", value_parser = |s: &str| u32::from_str_radix(s, 8).map_err(|e| e.to_string()))]
    mode: u32,
}

pub fn run(command: FramesCommand) -> Result<(), Failure> {
    match command {
        FramesCommand::Watch(args) => watch(args),
        FramesCommand::Snapshot(args) => snapshot(args),
        FramesCommand::Cat(args) => cat(args),
        FramesCommand::Publish(args) => publish(args),
    }
}

fn open(name: &str) -> Result<FrameReader, Failure> {
    FrameReaderOptions::new(name)
        .open_timeout(Duration::from_secs(1))
        .open()
        .named(name)
}

/// The `q`-quantile of sorted `values`, or 0 for none.
fn quantile(sorted: &[u64], q: f64) -> u64 {
    if sorted.is_empty() {
        return 0;
    }
    sorted[((sorted.len() - 1) as f64 * q).round() as usize]
}

fn watch(args: WatchArgs) -> Result<(), Failure> {
    let name = args.name.as_str();
    let mut reader = open(name)?;
    let start = Instant::now();
    let end = args
        .seconds
        .map(|s| start + Duration::from_secs_f64(s.max(0.0)));
    let interval = Duration::from_secs_f64(args.interval.max(0.05));
    let tty = io::stderr().is_terminal() && !args.output.json;
    let (mut total, mut total_skipped) = (0u64, 0u64);
    let mut window_start = Instant::now();
    let (mut frames, mut skipped) = (0u64, 0u64);
    let mut latencies: Vec<u64> = Vec::new();
    let mut last = None;
    let mut ended = "";
    loop {
        let now = Instant::now();
        let done = end.is_some_and(|e| now >= e) || args.count.is_some_and(|c| total >= c);
        if done || now >= window_start + interval || !ended.is_empty() {
            let secs = now.duration_since(window_start).as_secs_f64();
            latencies.sort_unstable();
            let (p50, p99) = (quantile(&latencies, 0.5), quantile(&latencies, 0.99));
            let fps = if secs > 0.0 {
                frames as f64 / secs
            } else {
                0.0
            };
            let finished = done || !ended.is_empty();
            if args.output.json {
                let mut out = io::stdout().lock();
                writeln!(
                    out,
                    "{}",
                    json!({
                        "name": name,
                        "elapsed_s": start.elapsed().as_secs_f64(),
                        "frames": frames,
                        "fps": fps,
                        "skipped": skipped,
                        "latency_p50_us": p50 as f64 / 1e3,
                        "latency_p99_us": p99 as f64 / 1e3,
                        "seq": last.map(|(seq, _)| seq),
                        "format": last.map(|(_, m): (u64, FrameMeta)| json!({
                            "width": m.width, "height": m.height,
                            "pixel_format": format_name(m.pixel_format),
                        })),
                        "final": finished,
                        "total_frames": total,
                        "total_skipped": total_skipped,
                        "ended": if ended.is_empty() { None } else { Some(ended) },
                    })
                )?;
                out.flush()?;
            } else {
                let format = last.map_or(String::new(), |(seq, m): (u64, FrameMeta)| {
                    format!(
                        "  seq {seq}  {}x{} {}",
                        m.width,
                        m.height,
                        format_name(m.pixel_format)
                    )
                });
                let line = format!(
                    "{name}: {fps:7.2} fps  {skipped} skipped  latency p50 {:.1} us  p99 {:.1} us{format}",
                    p50 as f64 / 1e3,
                    p99 as f64 / 1e3
                );
                let mut err = io::stderr().lock();
                if tty {
                    write!(err, "\r\x1b[2K{line}")?;
                } else {
                    writeln!(err, "{line}")?;
                }
            }
            if finished {
                if !args.output.json {
                    let mut err = io::stderr().lock();
                    if tty {
                        writeln!(err)?;
                    }
                    writeln!(
                        err,
                        "{name}: {total} frames, {total_skipped} skipped in {:.1} s{}",
                        start.elapsed().as_secs_f64(),
                        if ended.is_empty() {
                            String::new()
                        } else {
                            format!(" ({ended})")
                        }
                    )?;
                }
                return Ok(());
            }
            window_start = now;
            (frames, skipped) = (0, 0);
            latencies.clear();
        }
        let wait = (window_start + interval)
            .saturating_duration_since(Instant::now())
            .max(Duration::from_millis(1));
        match reader.wait_next(wait) {
            Ok(frame) => {
                let info = *frame.info();
                frames += 1;
                total += 1;
                skipped += info.skipped;
                total_skipped += info.skipped;
                // The first frame was published before we attached: its age is not a
                // hand-over latency.
                if info.timestamp_ns != 0 && total > 1 {
                    latencies.push(monotonic_ns().saturating_sub(info.timestamp_ns));
                }
                last = Some((info.seq, info.meta));
            }
            Err(Error::Timeout { .. }) => {}
            Err(Error::WriterGone { .. }) => ended = "the writer closed the channel",
            Err(e) => return Err(Failure::Mmf(e, name.to_owned())),
        }
    }
}

/// Waits up to `timeout` for a frame and copies it out, with its metadata.
fn newest_frame(
    reader: &mut FrameReader,
    timeout: Duration,
) -> Result<(Vec<u8>, FrameMeta, u64), Error> {
    let deadline = Instant::now() + timeout;
    let copy = |frame: mmf::Frame<'_>| (frame.to_vec(), frame.meta(), frame.seq(), frame.verify());
    loop {
        let latest = reader.latest()?.map(copy);
        let (bytes, meta, seq, verified) = match latest {
            Some(copied) => copied,
            None => copy(reader.wait_next(deadline.saturating_duration_since(Instant::now()))?),
        };
        // A frame whose slot another reader's misbehaviour let the writer reuse: take the
        // next one rather than write a torn picture.
        match verified {
            Ok(()) => return Ok((bytes, meta, seq)),
            Err(Error::FrameOverwritten { .. }) if Instant::now() < deadline => continue,
            Err(e) => return Err(e),
        }
    }
}

fn snapshot(args: SnapshotArgs) -> Result<(), Failure> {
    let name = args.name.as_str();
    let mut reader = open(name)?;
    let (mut bytes, meta, seq) = newest_frame(&mut reader, Duration::from_millis(args.timeout))
        .map_err(|e| match e {
            Error::Timeout { .. } => Failure::Message(format!(
                "no frame on {name:?} within {} ms; is the producer running? (`mmf info {name}`; \
                 --timeout MS waits longer)",
                args.timeout
            )),
            e => Failure::Mmf(e, name.to_owned()),
        })?;
    let format = PixelFormat::from_code(meta.pixel_format);
    let (color, channels) = match format {
        Some(PixelFormat::Rgb24 | PixelFormat::Bgr24) => (png::ColorType::Rgb, 3),
        Some(PixelFormat::Rgba | PixelFormat::Bgra) => (png::ColorType::Rgba, 4),
        Some(PixelFormat::Gray) => (png::ColorType::Grayscale, 1),
        _ => {
            return Err(Failure::Message(format!(
                "frame {seq} of {name:?} has pixel format {}, which snapshot cannot convert; it \
                 reads rgb24, bgr24, rgba, bgra and gray (the producer sets the format: \
                 `mmf frames publish --pix-fmt`, FrameMeta::pixel_format)",
                format_name(meta.pixel_format)
            )))
        }
    };
    let needed = (meta.width as usize)
        .checked_mul(meta.height as usize)
        .and_then(|p| p.checked_mul(channels));
    let needed = match needed {
        Some(n) if n > 0 && n <= bytes.len() => n,
        _ => {
            return Err(Failure::Message(format!(
                "frame {seq} of {name:?} holds {} bytes, which is not a {}x{} {} picture (the \
                 producer's width and height metadata are wrong)",
                bytes.len(),
                meta.width,
                meta.height,
                format_name(meta.pixel_format)
            )))
        }
    };
    bytes.truncate(needed);
    if matches!(format, Some(PixelFormat::Bgr24 | PixelFormat::Bgra)) {
        for pixel in bytes.chunks_exact_mut(channels) {
            pixel.swap(0, 2);
        }
    }
    let file = std::fs::File::create(&args.out)?;
    let mut encoder = png::Encoder::new(io::BufWriter::new(file), meta.width, meta.height);
    encoder.set_color(color);
    encoder.set_depth(png::BitDepth::Eight);
    let png_error =
        |e: png::EncodingError| Failure::Message(format!("writing {}: {e}", args.out.display()));
    let mut writer = encoder.write_header().map_err(png_error)?;
    writer.write_image_data(&bytes).map_err(png_error)?;
    writer.finish().map_err(png_error)?;
    println!(
        "wrote {}: frame {seq}, {}x{} {}",
        args.out.display(),
        meta.width,
        meta.height,
        format_name(meta.pixel_format)
    );
    Ok(())
}

fn cat(args: CatArgs) -> Result<(), Failure> {
    let name = args.name.as_str();
    let mut reader = open(name)?;
    let timeout = Duration::from_millis(args.timeout);
    let mut out = io::stdout().lock();
    let (mut written, mut skipped) = (0u64, 0u64);
    while args.count.map_or(true, |c| written < c) {
        let frame = match reader.wait_next(timeout) {
            Ok(frame) => frame,
            // The producer finished: the end of the stream, as EOF is for a file.
            Err(Error::WriterGone { .. }) => break,
            Err(Error::Timeout { waited }) => {
                return Err(Failure::Message(format!(
                    "no new frame on {name:?} for {waited:?}; is the producer running? \
                     (`mmf info {name}`; --timeout MS waits longer)"
                )))
            }
            Err(e) => return Err(Failure::Mmf(e, name.to_owned())),
        };
        if frame.skipped() > 0 && written > 0 {
            skipped += frame.skipped();
            if args.every {
                return Err(Failure::Message(format!(
                    "skipped {} frames of {name:?} after frame {written}: the consumer is slower \
                     than the producer (without --every, cat skips to the newest frame)",
                    frame.skipped()
                )));
            }
        }
        out.write_all(&frame)?;
        written += 1;
    }
    out.flush()?;
    drop(out);
    if skipped > 0 {
        eprintln!("mmf: {written} frames written, {skipped} skipped (the consumer was slower)");
    }
    Ok(())
}

fn publish(args: PublishArgs) -> Result<(), Failure> {
    let name = args.name.as_str();
    let Some(frame_len) = args
        .pix_fmt
        .frame_len(args.width, args.height)
        .filter(|&n| n > 0)
    else {
        return Err(Failure::Usage(format!(
            "--width {} --height {} is not a frame size for --pix-fmt {}",
            args.width, args.height, args.pix_fmt
        )));
    };
    if args.max_readers == 0 || args.max_readers > mmf::channel::MAX_READERS {
        return Err(Failure::Usage(format!(
            "--max-readers must be 1 to {}",
            mmf::channel::MAX_READERS
        )));
    }
    if args.wait_readers > args.max_readers {
        return Err(Failure::Usage(format!(
            "--wait-readers {} exceeds --max-readers {}",
            args.wait_readers, args.max_readers
        )));
    }
    let mut writer = FrameWriter::create(
        name,
        FrameSpec::new(frame_len)
            .max_readers(args.max_readers)
            .mode(args.mode),
    )
    .named(name)?;
    writer.set_meta(FrameMeta {
        width: args.width,
        height: args.height,
        pixel_format: args.pix_fmt.code(),
        tag: 0,
    });
    eprintln!(
        "mmf: publishing {}x{} {} frames ({frame_len} bytes) to {name}",
        args.width, args.height, args.pix_fmt
    );
    // Readers attached (the channel's reader table, read-only, as `mmf info` shows it).
    let attached = || {
        inspect::segment(name)
            .ok()
            .and_then(|info| info.channel)
            .map_or(0, |c| c.readers.len())
    };
    while attached() < args.wait_readers {
        std::thread::sleep(Duration::from_millis(5));
    }
    let mut input = io::stdin().lock();
    let mut buf = vec![0u8; frame_len];
    loop {
        let got = read_full(&mut input, &mut buf)?;
        if got < frame_len {
            if got > 0 {
                eprintln!(
                    "mmf: dropped {got} trailing bytes: not a whole {frame_len}-byte frame \
                     (check --width, --height and --pix-fmt against the producer's)"
                );
            }
            break;
        }
        writer.publish(&buf).named(name)?;
    }
    eprintln!("mmf: published {} frames to {name}", writer.seq());
    Ok(())
}

/// Reads until `buf` is full or input ends; returns how many bytes it got.
fn read_full(input: &mut impl Read, buf: &mut [u8]) -> io::Result<usize> {
    let mut got = 0;
    while got < buf.len() {
        match input.read(&mut buf[got..]) {
            Ok(0) => break,
            Ok(n) => got += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(got)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantiles_pick_from_the_sorted_values() {
        let values: Vec<u64> = (1..=100).collect();
        assert_eq!(quantile(&values, 0.5), 51);
        assert_eq!(quantile(&values, 0.99), 99);
        assert_eq!(quantile(&[], 0.5), 0);
    }

    #[test]
    fn read_full_stops_at_the_end_of_input() {
        let mut input: &[u8] = b"abcde";
        let mut buf = [0u8; 3];
        assert_eq!(read_full(&mut input, &mut buf).unwrap(), 3);
        assert_eq!(read_full(&mut input, &mut buf).unwrap(), 2);
        assert_eq!(read_full(&mut input, &mut buf).unwrap(), 0);
    }
}
