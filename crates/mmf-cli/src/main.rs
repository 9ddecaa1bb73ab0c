//! `mmf`: create, inspect, read, write and remove named shared-memory segments from a shell.
//!
//! Every command goes through the library, so it takes the segment's in-region lock like any
//! other process: `mmf write` never tears a frame a reader is copying, and `mmf read` returns a
//! consistent snapshot.

use std::io::{self, Read, Write};
use std::process::ExitCode;
use std::time::Duration;

use mmf::{Mmf, MmfOptions};

const USAGE: &str = "\
usage: mmf <command> [arguments]

commands:
  create <name> <size> [--mode OCTAL] [--prefault] [--hold]
        create a segment of <size> data bytes (suffixes K, M, G = KiB, MiB, GiB).
        On Linux the name persists after the command exits (remove it with `mmf remove`).
        On Windows a segment lives only while a handle is open: --hold keeps it open
        until standard input closes (also available on Linux).
  info <name>                         print the segment's size and access
  read <name> [--offset N] [--len N] [--hex]
        copy bytes to standard output (default: the whole data region)
  write <name> [--offset N]           copy standard input into the segment
  remove <name>                       remove the name, and a frame channel's reader table
                                      with it (open handles keep working)
  list                                list mmf segments (Linux: scans /dev/shm)
  help                                print this text

Every access takes the segment's lock; --timeout MS bounds the wait (default: 5000).
";

/// A command-line mistake: printed with the usage text, exit code 2.
struct Usage(String);

enum Failure {
    Usage(Usage),
    Mmf(mmf::Error),
    Io(io::Error),
}

impl From<Usage> for Failure {
    fn from(u: Usage) -> Self {
        Failure::Usage(u)
    }
}
impl From<mmf::Error> for Failure {
    fn from(e: mmf::Error) -> Self {
        Failure::Mmf(e)
    }
}
impl From<io::Error> for Failure {
    fn from(e: io::Error) -> Self {
        Failure::Io(e)
    }
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match run(&args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(Failure::Usage(Usage(msg))) => {
            eprintln!("mmf: {msg}\n\n{USAGE}");
            ExitCode::from(2)
        }
        Err(Failure::Mmf(e)) => {
            eprintln!("mmf: {e}");
            ExitCode::FAILURE
        }
        // A closed pipe (`mmf read x | head`) is not an error worth reporting.
        Err(Failure::Io(e)) if e.kind() == io::ErrorKind::BrokenPipe => ExitCode::SUCCESS,
        Err(Failure::Io(e)) => {
            eprintln!("mmf: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Parsed `--flag value` / `--switch` options after the positional arguments.
struct Flags<'a> {
    rest: &'a [String],
}

impl<'a> Flags<'a> {
    fn value(&self, flag: &str) -> Result<Option<&'a str>, Usage> {
        match self.rest.iter().position(|a| a == flag) {
            None => Ok(None),
            Some(i) => self
                .rest
                .get(i + 1)
                .map(|v| Some(v.as_str()))
                .ok_or_else(|| Usage(format!("{flag} needs a value"))),
        }
    }

    fn switch(&self, flag: &str) -> bool {
        self.rest.iter().any(|a| a == flag)
    }

    fn check_known(&self, valued: &[&str], switches: &[&str]) -> Result<(), Usage> {
        let mut i = 0;
        while i < self.rest.len() {
            let arg = self.rest[i].as_str();
            if valued.contains(&arg) {
                i += 2;
            } else if switches.contains(&arg) {
                i += 1;
            } else {
                return Err(Usage(format!("unexpected argument {arg:?}")));
            }
        }
        Ok(())
    }
}

/// Parses a size or offset: decimal, `0x` hex, or with a K/M/G (binary) suffix.
fn parse_size(text: &str) -> Result<usize, Usage> {
    let bad = || {
        Usage(format!(
            "{text:?} is not a size (examples: 4096, 0x1000, 64K, 8M, 1G)"
        ))
    };
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

fn positional<'a>(
    args: &'a [String],
    count: usize,
    what: &str,
) -> Result<(&'a [String], Flags<'a>), Usage> {
    let split = args
        .iter()
        .position(|a| a.starts_with("--"))
        .unwrap_or(args.len());
    if split != count {
        return Err(Usage(format!("expected {what}")));
    }
    Ok((
        &args[..split],
        Flags {
            rest: &args[split..],
        },
    ))
}

fn options(name: &str, flags: &Flags) -> Result<MmfOptions, Usage> {
    let timeout = match flags.value("--timeout")? {
        Some(ms) => Duration::from_millis(parse_size(ms)? as u64),
        None => Duration::from_secs(5),
    };
    Ok(MmfOptions::new(name).lock_timeout(Some(timeout)))
}

fn run(args: &[String]) -> Result<(), Failure> {
    let Some((command, rest)) = args.split_first() else {
        return Err(Usage("no command given".into()).into());
    };
    match command.as_str() {
        "create" => {
            let (pos, flags) = positional(rest, 2, "<name> <size>")?;
            flags.check_known(&["--mode", "--timeout"], &["--prefault", "--hold"])?;
            let size = parse_size(&pos[1])?;
            let mut opts = options(&pos[0], &flags)?
                .persist(true)
                .prefault(flags.switch("--prefault"));
            if let Some(mode) = flags.value("--mode")? {
                let mode = u32::from_str_radix(mode, 8)
                    .map_err(|_| Usage(format!("--mode {mode:?} is not octal")))?;
                opts = opts.mode(mode);
            }
            let segment = opts.create(size)?;
            println!("created {} ({} data bytes)", segment.name(), segment.len());
            if flags.switch("--hold") {
                eprintln!(
                    "holding {} open until standard input closes",
                    segment.name()
                );
                io::copy(&mut io::stdin().lock(), &mut io::sink())?;
            }
            Ok(())
        }
        "info" => {
            let (pos, flags) = positional(rest, 1, "<name>")?;
            flags.check_known(&["--timeout"], &[])?;
            let segment = options(&pos[0], &flags)?.open_read_only()?;
            println!("name:           {}", segment.name());
            println!("data bytes:     {}", segment.len());
            println!("layout version: {}", mmf::header::LAYOUT_VERSION);
            println!("header bytes:   {}", mmf::header::HEADER_LEN);
            Ok(())
        }
        "read" => {
            let (pos, flags) = positional(rest, 1, "<name>")?;
            flags.check_known(&["--offset", "--len", "--timeout"], &["--hex"])?;
            let segment = options(&pos[0], &flags)?.open_read_only()?;
            let offset = flags
                .value("--offset")?
                .map(parse_size)
                .transpose()?
                .unwrap_or(0);
            let len = match flags.value("--len")? {
                Some(len) => parse_size(len)?,
                None => segment.len().saturating_sub(offset),
            };
            let bytes = segment.read_to_vec(offset, len)?;
            let mut out = io::stdout().lock();
            if flags.switch("--hex") {
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
                        offset + row * 16,
                        hex.join(" ")
                    )?;
                }
            } else {
                out.write_all(&bytes)?;
            }
            out.flush()?;
            Ok(())
        }
        "write" => {
            let (pos, flags) = positional(rest, 1, "<name>")?;
            flags.check_known(&["--offset", "--timeout"], &[])?;
            let segment = options(&pos[0], &flags)?.open()?;
            let offset = flags
                .value("--offset")?
                .map(parse_size)
                .transpose()?
                .unwrap_or(0);
            let mut input = Vec::new();
            io::stdin().lock().read_to_end(&mut input)?;
            segment.write_at(offset, &input)?;
            eprintln!("wrote {} bytes at offset {offset}", input.len());
            Ok(())
        }
        "remove" => {
            let (pos, flags) = positional(rest, 1, "<name>")?;
            flags.check_known(&[], &[])?;
            Mmf::remove(&pos[0])?;
            Ok(())
        }
        "list" => {
            let (_, flags) = positional(rest, 0, "no arguments")?;
            flags.check_known(&[], &[])?;
            list()
        }
        "help" | "--help" | "-h" => {
            print!("{USAGE}");
            Ok(())
        }
        other => Err(Usage(format!("unknown command {other:?}")).into()),
    }
}

#[cfg(target_os = "linux")]
fn list() -> Result<(), Failure> {
    let mut names = Vec::new();
    for entry in std::fs::read_dir("/dev/shm")? {
        let entry = entry?;
        // A frame channel's reader table (`<name>+readers`) is part of its channel, listed
        // (and removed, `Mmf::remove`) under the channel's name; user names have no `+`.
        if entry.file_name().to_string_lossy().contains('+') {
            continue;
        }
        let mut magic = [0u8; 8];
        // Objects we cannot read, or shorter than a magic, are simply not ours to list.
        let is_mmf = std::fs::File::open(entry.path())
            .and_then(|mut f| f.read_exact(&mut magic))
            .is_ok_and(|()| magic == mmf::header::MAGIC);
        if is_mmf {
            names.push(entry.file_name().to_string_lossy().into_owned());
        }
    }
    names.sort();
    for name in names {
        println!("{name}");
    }
    Ok(())
}

#[cfg(not(target_os = "linux"))]
fn list() -> Result<(), Failure> {
    Err(Failure::Mmf(mmf::Error::Unsupported {
        what: "listing segments is available on Linux only (Windows has no enumeration of named sections)",
    }))
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
}
