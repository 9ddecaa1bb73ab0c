//! `mmf`: see, diagnose and repair shared-memory segments and frame channels from a shell,
//! and connect frame channels to ffmpeg.
//!
//! Every command goes through the library. Reporting commands (`list`, `info`) only map
//! read-only and load, so they are safe against a live pipeline; `read` and `write` take the
//! segment's in-region lock like any other process, so `mmf write` never tears data a reader
//! is copying. Exit codes: 0 ok, 1 the command failed, 2 the command line is wrong.

use std::io;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};

mod frames;
mod report;
mod segment;

const AFTER_HELP: &str = "\
Exit status: 0 success; 1 the command ran and failed (the message says which command or flag \
fixes it); 2 the command line is wrong (unknown command or flag, bad value).

Examples:
  mmf list                                 every segment and channel, with lock and writer state
  mmf info cam0 --json                     one object, header and lock words decoded, as JSON
  mmf frames watch cam0                    live frame rate, skips and latency of channel cam0
  ffmpeg -i in.mp4 -f rawvideo -pix_fmt rgb24 - | mmf frames publish cam0 -W 640 -H 360 --pix-fmt rgb24
  mmf frames cat cam0 | ffmpeg -f rawvideo -pix_fmt rgb24 -s 640x360 -i - out.mp4";

/// See, diagnose and repair mmf shared-memory segments and frame channels.
#[derive(Parser)]
#[command(name = "mmf", version, about, after_help = AFTER_HELP)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

/// `--json` for every command that reports.
#[derive(Args, Clone, Copy)]
pub struct Output {
    /// Print machine-readable JSON instead of text
    #[arg(long)]
    pub json: bool,
}

#[derive(Subcommand)]
enum Command {
    /// List every segment and frame channel (Linux: scans /dev/shm)
    #[command(after_help = "\
Shows kind, size, mode, owner, creator pid and whether it lives, lock state (free, read-locked \
by N, write-locked by pid, poisoned) and, for channels, the writer, readers attached, newest \
frame and its age. Files in /dev/shm that are not mmf objects are listed as foreign; objects \
that cannot be opened are listed with the reason.

Examples:
  mmf list
  mmf list --json | jq '.[] | select(.kind == \"channel\")'")]
    List(Output),
    /// Show one object: header, lock words and channel state, as they are in memory
    #[command(after_help = "\
Maps the object read-only and takes no lock, so it also works on a stuck segment.

Examples:
  mmf info sensor-7
  mmf info cam0 --json")]
    Info {
        /// Segment or channel name
        name: String,
        #[command(flatten)]
        output: Output,
    },
    /// Create a plain segment
    #[command(after_help = "\
On Linux the segment persists after the command exits (remove it with `mmf remove`). On \
Windows a segment lives only while a handle is open: --hold keeps it open until standard input \
closes.

Examples:
  mmf create sensor-7 64K
  mmf create shared-buf 8M --mode 640 --prefault")]
    Create(segment::CreateArgs),
    /// Copy bytes of a segment to standard output
    #[command(after_help = "\
Examples:
  mmf read sensor-7 --len 64 --hex
  mmf read sensor-7 > dump.bin")]
    Read(segment::ReadArgs),
    /// Copy standard input into a segment, under its write lock
    #[command(after_help = "\
Examples:
  printf hello | mmf write sensor-7 --offset 16")]
    Write(segment::WriteArgs),
    /// Clear the poison a writer that died holding the lock left behind
    #[command(after_help = "\
Takes the write lock (recovering it from a dead holder), reports what it found, asks before \
declaring the data repaired (or --yes), and clears the poison so that later lock takers no \
longer see an error.

Examples:
  mmf repair sensor-7
  mmf repair sensor-7 --yes --json")]
    Repair {
        /// Segment name
        name: String,
        /// Do not ask for confirmation
        #[arg(long, short = 'y')]
        yes: bool,
        #[command(flatten)]
        output: Output,
    },
    /// Remove a segment or channel name (open handles keep working)
    #[command(after_help = "\
Refuses files that are not mmf objects and objects a live process still uses, unless --force. \
A channel's reader table is removed with it.

Examples:
  mmf remove sensor-7
  mmf remove stale-cam --force")]
    Remove {
        /// Segment or channel name
        name: String,
        /// Remove even a foreign file or an object a live process uses
        #[arg(long)]
        force: bool,
        #[command(flatten)]
        output: Output,
    },
    /// Remove every mmf object whose creator and holders are all dead (dry run by default)
    #[command(after_help = "\
Without --yes only lists what it would remove. Foreign files and objects that cannot be \
inspected are never removed.

Examples:
  mmf gc
  mmf gc --prefix cam- --yes")]
    Gc {
        /// Remove them (without it, only list them)
        #[arg(long, short = 'y')]
        yes: bool,
        /// Only objects whose name starts with this
        #[arg(long, default_value = "")]
        prefix: String,
        #[command(flatten)]
        output: Output,
    },
    /// Frame channels: watch, snapshot, pipe to and from ffmpeg
    #[command(subcommand)]
    Frames(frames::FramesCommand),
}

/// Why a command failed.
pub enum Failure {
    /// The library's error, with the name of the object it concerns (for the hint).
    Mmf(mmf::Error, String),
    Io(io::Error),
    /// A runtime failure already phrased for the user: exit 1.
    Message(String),
    /// A command-line mistake clap cannot see (e.g. flags that contradict): exit 2.
    Usage(String),
}

impl From<io::Error> for Failure {
    fn from(e: io::Error) -> Self {
        Failure::Io(e)
    }
}

/// Attaches the object's name to a library error, for [`explain`].
pub trait Named<T> {
    fn named(self, name: &str) -> Result<T, Failure>;
}

impl<T> Named<T> for mmf::Result<T> {
    fn named(self, name: &str) -> Result<T, Failure> {
        self.map_err(|e| Failure::Mmf(e, name.to_owned()))
    }
}

/// A library error phrased for someone at a shell, naming the command or flag that helps;
/// the library's own text (written for programmers) where there is nothing better to say.
pub fn explain(error: &mmf::Error, name: &str) -> String {
    use mmf::Error as E;
    match error {
        E::NotFound { .. } => {
            format!("no segment or channel named {name:?} (`mmf list` shows what exists)")
        }
        E::Poisoned => format!(
            "a process died while holding the write lock of {name:?}, so its data may be \
             inconsistent; check it, then run `mmf repair {name}`"
        ),
        E::NotReady { waited, .. } => format!(
            "{name:?} was not initialised by its creator within {waited:?}; the creator may \
             have crashed (`mmf info {name}` shows its state; `mmf remove {name}` removes it)"
        ),
        E::Timeout { waited } => format!(
            "timed out after {waited:?} waiting for {name:?}; `mmf info {name}` shows who holds \
             its lock, --timeout MS waits longer"
        ),
        E::WrongKind { found, .. } if *found == "frame channel" => format!(
            "{name:?} is a frame channel, not a plain segment: use `mmf frames cat|snapshot|watch \
             {name}` or `mmf info {name}`"
        ),
        E::WrongKind { found, .. } => format!(
            "{name:?} is a {found}, not a frame channel: use `mmf read {name}` or `mmf info {name}`"
        ),
        E::NotMmf { .. } => format!(
            "{name:?} is not an mmf object (another program's shared memory, or garbage); mmf \
             leaves it alone (`mmf remove --force {name}` deletes it)"
        ),
        E::UntrustedOwner { owner, .. } => format!(
            "{name:?} is owned by {owner}, not by you or root, and mmf does not open other users' \
             objects; run mmf as that user, or `mmf remove --force {name}` if it is a squatter"
        ),
        E::ChannelFull { max_readers, .. } => format!(
            "channel {name:?} already has its maximum of {max_readers} readers (`mmf info {name}` \
             lists them; their producer sets the limit)"
        ),
        E::WriterGone { .. } => format!(
            "the writer of channel {name:?} has closed it or exited; start the producer again"
        ),
        E::AlreadyExists { .. } => format!(
            "{name:?} already exists (left untouched); pick another name or `mmf remove {name}` \
             first"
        ),
        E::ReadOnly { op } => format!("{op} needs write permission on {name:?}, which you lack"),
        E::Unsupported { what } => format!("not supported on this system: {what}"),
        other => other.to_string(),
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::List(output) => report::list(output),
        Command::Info { name, output } => report::info(&name, output),
        Command::Create(args) => segment::create(args),
        Command::Read(args) => segment::read(args),
        Command::Write(args) => segment::write(args),
        Command::Repair { name, yes, output } => report::repair(&name, yes, output),
        Command::Remove {
            name,
            force,
            output,
        } => report::remove(&name, force, output),
        Command::Gc {
            yes,
            prefix,
            output,
        } => report::gc(yes, &prefix, output),
        Command::Frames(command) => frames::run(command),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(Failure::Mmf(e, name)) => {
            eprintln!("mmf: {}", explain(&e, &name));
            ExitCode::FAILURE
        }
        // A closed pipe (`mmf read x | head`) is the reader saying "enough", not an error.
        Err(Failure::Io(e)) if e.kind() == io::ErrorKind::BrokenPipe => ExitCode::SUCCESS,
        Err(Failure::Io(e)) => {
            eprintln!("mmf: {e}");
            ExitCode::FAILURE
        }
        Err(Failure::Message(message)) => {
            eprintln!("mmf: {message}");
            ExitCode::FAILURE
        }
        Err(Failure::Usage(message)) => {
            eprintln!("error: {message}\n\nFor more information, try '--help'.");
            ExitCode::from(2)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn the_command_line_definition_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn explanations_name_the_command_that_helps() {
        let poisoned = explain(&mmf::Error::Poisoned, "s");
        assert!(poisoned.contains("mmf repair s"), "{poisoned}");
        assert!(!poisoned.contains("clear_poison"), "{poisoned}");
        let missing = explain(
            &mmf::Error::NotFound {
                name: "s".to_owned(),
            },
            "s",
        );
        assert!(missing.contains("mmf list"), "{missing}");
    }
}
