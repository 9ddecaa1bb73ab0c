//! `create`, `read`, `write`: plain segments, through the library's lock.

use std::io::{self, Read, Write};
use std::time::Duration;

use clap::Args;
use mmf::MmfOptions;

use crate::{Failure, Named};

#[derive(Args)]
pub struct CreateArgs {
    /// Segment name (1 to 200 characters of A-Z a-z 0-9 . _ -)
    name: String,
    /// Data bytes: decimal, 0x hex, or with a K, M or G (binary) suffix
    #[arg(value_parser = parse_size)]
    size: usize,
    /// Permission bits, octal (default 600)
    #[arg(long, value_parser = parse_mode)]
    mode: Option<u32>,
    /// Fault every page in now rather than on first touch
    #[arg(long)]
    prefault: bool,
    /// Keep the segment open until standard input closes
    #[arg(long)]
    hold: bool,
}

#[derive(Args)]
pub struct ReadArgs {
    /// Segment name
    name: String,
    /// First byte to copy
    #[arg(long, value_parser = parse_size, default_value = "0")]
    offset: usize,
    /// Bytes to copy (default: to the end of the data region)
    #[arg(long, value_parser = parse_size)]
    len: Option<usize>,
    /// Print a hex dump instead of raw bytes
    #[arg(long)]
    hex: bool,
}

#[derive(Args)]
pub struct WriteArgs {
    /// Segment name
    name: String,
    /// Where to write the bytes
    #[arg(long, value_parser = parse_size, default_value = "0")]
    offset: usize,
    /// Longest wait for the write lock, in milliseconds
    #[arg(long, default_value_t = 5000)]
    timeout: u64,
}

/// Parses a size or offset: decimal, `0x` hex, or with a K/M/G (binary) suffix.
pub fn parse_size(text: &str) -> Result<usize, String> {
    let bad = || format!("{text:?} is not a size (examples: 4096, 0x1000, 64K, 8M, 1G)");
    let (digits, shift) = match text.as_bytes().last().map(u8::to_ascii_uppercase) {
        Some(b'K') => (&text[..text.len() - 1], 10),
        Some(b'M') => (&text[..text.len() - 1], 20),
        Some(b'G') => (&text[..text.len() - 1], 30),
        _ => (text, 0),
    };
    let value = match digits.strip_prefix("0x") {
        Some(hex) => usize::from_str_radix(hex, 16),
        None => digits.parse::<usize>(),
    }
    .map_err(|_| bad())?;
    value.checked_mul(1 << shift).ok_or_else(bad)
}

fn parse_mode(text: &str) -> Result<u32, String> {
    u32::from_str_radix(text, 8)
        .ok()
        .filter(|mode| *mode <= 0o777)
        .ok_or_else(|| format!("{text:?} is not an octal mode (examples: 600, 640, 644)"))
}

pub fn create(args: CreateArgs) -> Result<(), Failure> {
    let mut opts = MmfOptions::new(&args.name)
        .persist(true)
        .prefault(args.prefault);
    if let Some(mode) = args.mode {
        opts = opts.mode(mode);
    }
    let segment = opts.create(args.size).named(&args.name)?;
    println!("created {} ({} data bytes)", segment.name(), segment.len());
    if args.hold {
        eprintln!(
            "holding {} open until standard input closes",
            segment.name()
        );
        io::copy(&mut io::stdin().lock(), &mut io::sink())?;
    }
    Ok(())
}

pub fn read(args: ReadArgs) -> Result<(), Failure> {
    let segment = MmfOptions::new(&args.name)
        .open_read_only()
        .named(&args.name)?;
    let len = args
        .len
        .unwrap_or_else(|| segment.len().saturating_sub(args.offset));
    let bytes = segment.read_to_vec(args.offset, len).named(&args.name)?;
    let mut out = io::stdout().lock();
    if args.hex {
        for (row, chunk) in bytes.chunks(16).enumerate() {
            let hex: Vec<String> = chunk.iter().map(|b| format!("{b:02x}")).collect();
            let text: String = chunk
                .iter()
                .map(|&b| {
                    if b.is_ascii_graphic() || b == b' ' {
                        b as char
                    } else {
                        '.'
                    }
                })
                .collect();
            writeln!(
                out,
                "{:08x}  {:<47}  {text}",
                args.offset + row * 16,
                hex.join(" ")
            )?;
        }
    } else {
        out.write_all(&bytes)?;
    }
    out.flush()?;
    Ok(())
}

pub fn write(args: WriteArgs) -> Result<(), Failure> {
    let segment = MmfOptions::new(&args.name)
        .lock_timeout(Some(Duration::from_millis(args.timeout)))
        .open()
        .named(&args.name)?;
    let mut input = Vec::new();
    io::stdin().lock().read_to_end(&mut input)?;
    segment.write_at(args.offset, &input).named(&args.name)?;
    eprintln!("wrote {} bytes at offset {}", input.len(), args.offset);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_parse_with_suffixes_and_reject_garbage() {
        assert_eq!(parse_size("4096").ok(), Some(4096));
        assert_eq!(parse_size("0x10").ok(), Some(16));
        assert_eq!(parse_size("64K").ok(), Some(64 << 10));
        assert_eq!(parse_size("8m").ok(), Some(8 << 20));
        assert_eq!(parse_size("1G").ok(), Some(1 << 30));
        for bad in ["", "K", "-1", "12Q", "0xZZ", "99999999999999999999999G"] {
            assert!(parse_size(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn modes_are_octal_permission_bits() {
        assert_eq!(parse_mode("640"), Ok(0o640));
        for bad in ["", "8", "1777", "rw"] {
            assert!(parse_mode(bad).is_err(), "{bad:?} accepted");
        }
    }
}
