//! `list`, `info`, `repair`, `remove`, `gc`: what `mmf::inspect` sees, for people and for
//! scripts (`--json`), and the commands that act on it.

use std::io::{self, BufRead, Write};
use std::time::Duration;

use mmf::channel::PixelFormat;
use mmf::inspect::{self, ChannelInfo, Kind, LockInfo, LockState, ProcessInfo, SegmentInfo};
use mmf::lock::Liveness;
use mmf::{Error, LockError, MmfOptions, Owner};
use serde_json::{json, Value};

use crate::{explain, Failure, Named, Output};

fn alive(l: Liveness) -> &'static str {
    match l {
        Liveness::Alive => "alive",
        Liveness::Dead => "dead",
        Liveness::Unknown => "unknown",
    }
}

fn process_json(p: &ProcessInfo) -> Value {
    json!({ "pid": p.pid, "alive": alive(p.alive) })
}

/// A FourCC or format code as text: the ffmpeg name if it is one we know.
pub fn format_name(code: u32) -> String {
    match PixelFormat::from_code(code) {
        Some(format) => format.as_str().to_owned(),
        None if code == 0 => "unspecified".to_owned(),
        None => fourcc(code),
    }
}

fn fourcc(code: u32) -> String {
    let bytes = code.to_le_bytes();
    if bytes.iter().all(|b| b.is_ascii_graphic() || *b == b' ') {
        format!("FourCC {:?}", String::from_utf8_lossy(&bytes))
    } else {
        format!("code {code:#010x}")
    }
}

fn lock_kind_name(kind: u32) -> String {
    let bytes = kind.to_be_bytes();
    if bytes.iter().all(u8::is_ascii_graphic) {
        String::from_utf8_lossy(&bytes).into_owned()
    } else {
        format!("{kind:#010x}")
    }
}

fn lock_state_text(state: LockState) -> String {
    match state {
        LockState::Free => "free".to_owned(),
        LockState::ReadLocked(n) => format!("read-locked by {n}"),
        LockState::WriteLocked(Some(pid)) => format!("write-locked by pid {pid}"),
        LockState::WriteLocked(None) => "write-locked (untracked handle)".to_owned(),
        LockState::Poisoned => "poisoned".to_owned(),
    }
}

fn lock_state_json(state: LockState) -> Value {
    match state {
        LockState::Free => json!({ "state": "free" }),
        LockState::ReadLocked(n) => json!({ "state": "read-locked", "readers": n }),
        LockState::WriteLocked(pid) => json!({ "state": "write-locked", "pid": pid }),
        LockState::Poisoned => json!({ "state": "poisoned" }),
    }
}

fn lock_json(lock: &LockInfo) -> Value {
    let slots: Vec<Value> = lock
        .slots
        .iter()
        .map(|s| {
            json!({
                "index": s.index,
                "state": format!("{:?}", s.state).to_lowercase(),
                "generation": s.generation,
                "held": s.held,
                "read_locks": s.read_locks,
                "pid": s.process.pid,
                "alive": alive(s.process.alive),
            })
        })
        .collect();
    json!({
        "state": lock_state_json(lock.state()),
        "word": lock.word,
        "writer": lock.writer,
        "parked": lock.parked,
        "poisoned": lock.poisoned,
        "draining": lock.draining,
        "owner_slot": lock.owner_slot,
        "drain": lock.drain,
        "slots_used": lock.slots_used,
        "overflow": lock.overflow,
        "slots": slots,
    })
}

fn channel_json(c: &ChannelInfo) -> Value {
    let newest = c.newest.map(|f| {
        json!({
            "seq": f.seq,
            "timestamp_ns": f.timestamp_ns,
            "age_ms": f.age_ns.map(|ns| ns as f64 / 1e6),
            "len": f.len,
            "width": f.width,
            "height": f.height,
            "pixel_format": format_name(f.pixel_format),
            "pixel_format_code": f.pixel_format,
        })
    });
    let readers: Vec<Value> = c
        .readers
        .iter()
        .map(|r| {
            json!({
                "index": r.index,
                "pid": r.process.pid,
                "alive": alive(r.process.alive),
                "pinned_slot": r.pinned_slot,
                "parked": r.parked,
            })
        })
        .collect();
    json!({
        "version": c.version,
        "slots": c.slot_count,
        "max_readers": c.max_readers,
        "max_frame_len": c.max_frame_len,
        "slot_stride": c.slot_stride,
        "writer": process_json(&c.writer),
        "writer_closed": c.writer_closed,
        "newest": newest,
        "parked": c.parked,
        "readers": readers,
        "reader_table_error": c.reader_table_error.as_ref().map(ToString::to_string),
    })
}

fn owner_json(owner: &Option<Owner>) -> Value {
    match owner {
        Some(Owner::Unix { user, group }) => json!({ "uid": user, "gid": group }),
        Some(Owner::Sid(sid)) => json!({ "sid": sid }),
        Some(other) => json!({ "owner": other.to_string() }),
        None => Value::Null,
    }
}

fn info_json(info: &SegmentInfo) -> Value {
    let h = &info.header;
    json!({
        "name": info.name,
        "kind": info.kind.as_str(),
        "ok": info.problem.is_none(),
        "problem": info.problem.as_ref().map(|e| explain(e, &info.name)),
        "size": info.object_len,
        "data_len": h.data_len,
        "mode": info.mode.map(|m| format!("{m:04o}")),
        "owner": owner_json(&info.owner),
        "creator": process_json(&info.creator),
        "in_use": info.in_use(),
        "header": {
            "magic_ok": h.magic_ok,
            "ready": h.ready,
            "layout_version": h.layout_version,
            "header_len": h.header_len,
            "lock_kind": lock_kind_name(h.lock_kind),
            "data_len": h.data_len,
            "flags": h.flags,
            "creator_pid": h.creator_pid,
            "write_seq": h.write_seq,
            "os_waiters": h.os_waiters,
        },
        "lock": info.lock.as_ref().map(lock_json),
        "channel": info.channel.as_ref().map(channel_json),
        "channel_error": info.channel_error.as_ref().map(|e| explain(e, &info.name)),
    })
}

/// How a failed inspection shows in `list`: foreign files are a kind of their own.
fn error_json(name: &str, error: &Error) -> Value {
    let kind = if matches!(error, Error::NotMmf { .. }) {
        "foreign"
    } else {
        "unreadable"
    };
    json!({ "name": name, "kind": kind, "ok": false, "error": explain(error, name) })
}

fn human_size(bytes: u64) -> String {
    const UNITS: [&str; 4] = ["B", "KiB", "MiB", "GiB"];
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit < UNITS.len() - 1 {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{bytes} B")
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}

fn age_text(age_ns: Option<u64>) -> String {
    match age_ns {
        Some(ns) if ns < 10_000_000_000 => format!("{} ms ago", ns / 1_000_000),
        Some(ns) => format!("{} s ago", ns / 1_000_000_000),
        None => "unstamped".to_owned(),
    }
}

/// Whether the lock is write-locked through a slot whose process is dead: the next lock
/// taker recovers it and finds it poisoned.
fn dead_writer(lock: &LockInfo) -> bool {
    matches!(lock.state(), LockState::WriteLocked(_))
        && lock
            .owner_slot
            .and_then(|o| lock.slots.iter().find(|s| s.index == o))
            .is_some_and(|s| s.process.alive == Liveness::Dead)
}

/// A refusal in a few words, for a table cell (`mmf info` gives the whole message).
fn short(error: &Error) -> String {
    match error {
        Error::IncompatibleVersion { found, supported } => {
            format!("version {found} (this mmf reads {supported})")
        }
        Error::Corrupt { .. } => "corrupt header".to_owned(),
        Error::NotReady { .. } => "not initialised".to_owned(),
        Error::UntrustedOwner { .. } => "owned by another user (run mmf as that user)".to_owned(),
        Error::Truncated { .. } => "truncated".to_owned(),
        other => other.to_string(),
    }
}

/// The STATE column: the lock for a segment, the writer for a channel.
fn state_text(info: &SegmentInfo) -> String {
    if let Some(problem) = &info.problem {
        return format!("refused: {}", short(problem));
    }
    if let Some(c) = &info.channel {
        let writer = if c.writer_closed {
            "closed".to_owned()
        } else {
            format!("pid {} {}", c.writer.pid, alive(c.writer.alive))
        };
        return format!("writer {writer}");
    }
    if let Some(e) = &info.channel_error {
        return format!("channel unreadable: {}", short(e));
    }
    match &info.lock {
        Some(lock) if dead_writer(lock) => {
            format!("{} (dead: mmf repair)", lock_state_text(lock.state()))
        }
        Some(lock) => lock_state_text(lock.state()),
        None => format!("lock kind {}", lock_kind_name(info.header.lock_kind)),
    }
}

fn channel_summary(c: &ChannelInfo) -> String {
    let frame = match &c.newest {
        Some(f) => format!(
            "seq {} {}x{} {} {}",
            f.seq,
            f.width,
            f.height,
            format_name(f.pixel_format),
            age_text(f.age_ns)
        ),
        None => "no frames yet".to_owned(),
    };
    format!("readers {}/{}, {frame}", c.readers.len(), c.max_readers)
}

pub fn list(output: Output) -> Result<(), Failure> {
    let entries = inspect::list().named("/dev/shm")?;
    if output.json {
        let all: Vec<Value> = entries
            .iter()
            .map(|e| match &e.info {
                Ok(info) => info_json(info),
                Err(error) => error_json(&e.name, error),
            })
            .collect();
        println!("{}", Value::Array(all));
        return Ok(());
    }
    let mut rows = vec![[
        "NAME", "KIND", "SIZE", "MODE", "OWNER", "CREATOR", "STATE", "CHANNEL",
    ]
    .map(str::to_owned)];
    for entry in &entries {
        rows.push(match &entry.info {
            Ok(info) => [
                info.name.clone(),
                info.kind.as_str().to_owned(),
                human_size(info.header.data_len),
                info.mode.map_or("-".into(), |m| format!("{m:04o}")),
                match &info.owner {
                    Some(Owner::Unix { user, .. }) => user.to_string(),
                    Some(Owner::Sid(sid)) => sid.clone(),
                    Some(other) => other.to_string(),
                    None => "-".into(),
                },
                format!("{} {}", info.creator.pid, alive(info.creator.alive)),
                state_text(info),
                info.channel.as_ref().map_or(String::new(), channel_summary),
            ],
            Err(error) => {
                let kind = if matches!(error, Error::NotMmf { .. }) {
                    "foreign"
                } else {
                    "?"
                };
                let mut row: [String; 8] = Default::default();
                row[0] = entry.name.clone();
                row[1] = kind.to_owned();
                row[2] = "-".into();
                row[6] = match error {
                    Error::NotMmf { .. } => "not an mmf object".to_owned(),
                    other => format!("cannot open: {}", short(other)),
                };
                row
            }
        });
    }
    let mut widths = [0usize; 8];
    for row in &rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let mut out = io::stdout().lock();
    for row in &rows {
        let mut line = String::new();
        for (i, cell) in row.iter().enumerate() {
            if i + 1 == row.len() {
                line.push_str(cell);
            } else {
                line.push_str(&format!("{cell:<w$}  ", w = widths[i]));
            }
        }
        writeln!(out, "{}", line.trim_end())?;
    }
    if entries.is_empty() {
        writeln!(out, "(no shared memory objects)")?;
    }
    Ok(())
}

pub fn info(name: &str, output: Output) -> Result<(), Failure> {
    let info = inspect::segment(name).named(name)?;
    if output.json {
        println!("{}", info_json(&info));
        return Ok(());
    }
    let h = &info.header;
    let mut out = io::stdout().lock();
    writeln!(out, "name:          {}", info.name)?;
    writeln!(
        out,
        "kind:          {} (flags {})",
        info.kind.as_str(),
        h.flags
    )?;
    writeln!(
        out,
        "size:          {} bytes ({} data)",
        info.object_len, h.data_len
    )?;
    if let (Some(Owner::Unix { user, group }), Some(mode)) = (&info.owner, info.mode) {
        writeln!(
            out,
            "owner:         uid {user} gid {group}, mode {mode:04o}"
        )?;
    }
    writeln!(
        out,
        "creator:       pid {} ({})",
        info.creator.pid,
        alive(info.creator.alive)
    )?;
    writeln!(
        out,
        "header:        layout version {}, header {} bytes, lock kind {}, {}, write_seq {}, os_waiters {}",
        h.layout_version,
        h.header_len,
        lock_kind_name(h.lock_kind),
        if h.ready { "ready" } else { "not ready" },
        h.write_seq,
        h.os_waiters
    )?;
    if let Some(problem) = &info.problem {
        writeln!(out, "problem:       {}", explain(problem, name))?;
    }
    if let Some(lock) = &info.lock {
        let yes = |b: bool| if b { "yes" } else { "no" };
        writeln!(
            out,
            "lock:          {} (word {:#010x}: writer {}, parked {}, poisoned {}, draining {}{}; drain {}, slots used {}, untracked read locks {})",
            lock_state_text(lock.state()),
            lock.word,
            yes(lock.writer),
            yes(lock.parked),
            yes(lock.poisoned),
            yes(lock.draining),
            lock.owner_slot.map_or(String::new(), |s| format!(", owner slot {s}")),
            lock.drain,
            lock.slots_used,
            lock.overflow
        )?;
        for slot in &lock.slots {
            writeln!(
                out,
                "  slot {:<3}     {:?}, generation {}, pid {} ({}), {} read locks{}",
                slot.index,
                slot.state,
                slot.generation,
                slot.process.pid,
                alive(slot.process.alive),
                slot.read_locks,
                if slot.held { ", holds its byte" } else { "" }
            )?;
        }
    }
    if let Some(c) = &info.channel {
        writeln!(
            out,
            "channel:       version {}, {} slots of {} bytes (stride {}), up to {} readers",
            c.version, c.slot_count, c.max_frame_len, c.slot_stride, c.max_readers
        )?;
        writeln!(
            out,
            "  writer:      pid {} ({}){}",
            c.writer.pid,
            alive(c.writer.alive),
            if c.writer_closed { ", closed" } else { "" }
        )?;
        match &c.newest {
            Some(f) => writeln!(
                out,
                "  newest:      seq {}, {} bytes, {}x{} {}, {}",
                f.seq,
                f.len,
                f.width,
                f.height,
                format_name(f.pixel_format),
                age_text(f.age_ns)
            )?,
            None => writeln!(out, "  newest:      no frames yet")?,
        }
        writeln!(
            out,
            "  readers:     {} attached, {} parked",
            c.readers.len(),
            c.parked
        )?;
        for r in &c.readers {
            writeln!(
                out,
                "  reader {:<3}   pid {} ({}){}{}",
                r.index,
                r.process.pid,
                alive(r.process.alive),
                r.pinned_slot
                    .map_or(String::new(), |s| format!(", pins slot {s}")),
                if r.parked { ", waiting" } else { "" }
            )?;
        }
        if let Some(e) = &c.reader_table_error {
            writeln!(out, "  reader table: {}", explain(e, name))?;
        }
    }
    if let Some(e) = &info.channel_error {
        writeln!(out, "channel:       {}", explain(e, name))?;
    }
    Ok(())
}

/// Asks on the terminal; anything but y/yes is no (and so is a closed standard input).
fn confirm(question: &str) -> io::Result<bool> {
    eprint!("{question} [y/N] ");
    io::stderr().flush()?;
    let mut answer = String::new();
    io::stdin().lock().read_line(&mut answer)?;
    Ok(matches!(answer.trim(), "y" | "Y" | "yes" | "YES"))
}

pub fn repair(name: &str, yes: bool, output: Output) -> Result<(), Failure> {
    let info = inspect::segment(name).named(name)?;
    if info.kind != Kind::Plain {
        return Err(Failure::Message(format!(
            "{name:?} is a {}: only plain segments have a lock to repair (a channel whose \
             writer died is recreated by its producer; `mmf remove {name}` clears the name)",
            info.kind.as_str()
        )));
    }
    let Some(lock) = &info.lock else {
        return Err(Failure::Message(format!(
            "{name:?} does not use the default lock (lock kind {}), so mmf cannot repair it",
            lock_kind_name(info.header.lock_kind)
        )));
    };
    let before = lock.state();
    let dead_writer = dead_writer(lock);
    let found = if lock.poisoned {
        "poisoned: a writer died holding the lock".to_owned()
    } else if dead_writer {
        "write-locked by a dead process (taking the lock will poison it)".to_owned()
    } else {
        lock_state_text(before)
    };
    if !lock.poisoned && !dead_writer {
        if output.json {
            println!(
                "{}",
                json!({ "name": name, "found": found, "repaired": false })
            );
        } else {
            println!("{name}: {found}; nothing to repair");
        }
        return Ok(());
    }
    if !output.json {
        println!("{name}: {found}");
    }
    if !yes
        && !confirm(&format!(
            "the data of {name} may be half-written; declare it repaired and clear the poison?"
        ))?
    {
        return Err(Failure::Message(format!(
            "left {name} unchanged (answer y, or pass --yes, to repair it)"
        )));
    }
    let segment = MmfOptions::new(name)
        .lock_timeout(Some(Duration::from_secs(5)))
        .open()
        .named(name)?;
    // Taking the write lock recovers it from a dead holder (poisoning it) and waits for live
    // ones; the poison is cleared under it, so no reader sees the data in between.
    let guard = match segment.write() {
        Ok(guard) => guard,
        Err(LockError::Poisoned(poisoned)) => poisoned.into_inner(),
        Err(LockError::Failed(e)) => return Err(Failure::Mmf(e, name.to_owned())),
    };
    segment.clear_poison().named(name)?;
    drop(guard);
    if output.json {
        println!(
            "{}",
            json!({ "name": name, "found": found, "repaired": true })
        );
    } else {
        println!("{name}: poison cleared");
    }
    Ok(())
}

/// Who still uses `info`, for a refusal message.
fn users(info: &SegmentInfo) -> Vec<String> {
    let live = |p: &ProcessInfo| p.alive != Liveness::Dead;
    let mut who = Vec::new();
    if live(&info.creator) {
        who.push(format!("creator pid {}", info.creator.pid));
    }
    if let Some(lock) = &info.lock {
        for s in lock.slots.iter().filter(|s| live(&s.process)) {
            who.push(format!("handle pid {}", s.process.pid));
        }
    }
    if let Some(c) = &info.channel {
        if !c.writer_closed && live(&c.writer) {
            who.push(format!("writer pid {}", c.writer.pid));
        }
        for r in c.readers.iter().filter(|r| live(&r.process)) {
            who.push(format!("reader pid {}", r.process.pid));
        }
    }
    who.dedup();
    who
}

pub fn remove(name: &str, force: bool, output: Output) -> Result<(), Failure> {
    let why = match inspect::segment(name) {
        Ok(info) if info.in_use() => Some(format!(
            "{name:?} is in use ({}); stop those processes first, or pass --force",
            users(&info).join(", ")
        )),
        Ok(_) => None,
        Err(Error::NotMmf { .. }) => Some(format!(
            "{name:?} is not an mmf object (another program's shared memory); pass --force to \
             delete it anyway"
        )),
        Err(e @ (Error::NotFound { .. } | Error::InvalidName { .. })) => {
            return Err(Failure::Mmf(e, name.to_owned()))
        }
        Err(e) => Some(format!(
            "{name:?} cannot be inspected ({}); pass --force to remove it anyway",
            explain(&e, name)
        )),
    };
    if let Some(why) = why {
        if !force {
            return Err(Failure::Message(why));
        }
    }
    mmf::Mmf::remove(name).named(name)?;
    if output.json {
        println!("{}", json!({ "name": name, "removed": true }));
    } else {
        println!("removed {name}");
    }
    Ok(())
}

pub fn gc(yes: bool, prefix: &str, output: Output) -> Result<(), Failure> {
    let entries = inspect::list().named("/dev/shm")?;
    let mut results = Vec::new();
    for entry in entries.iter().filter(|e| e.name.starts_with(prefix)) {
        let Ok(info) = &entry.info else { continue };
        if info.in_use() || !matches!(info.kind, Kind::Plain | Kind::FrameChannel) {
            continue;
        }
        let removed = if yes {
            Some(mmf::Mmf::remove(&info.name).map_err(|e| explain(&e, &info.name)))
        } else {
            None
        };
        if !output.json {
            let verb = match &removed {
                None => "would remove".to_owned(),
                Some(Ok(())) => "removed".to_owned(),
                Some(Err(e)) => format!("could not remove ({e})"),
            };
            println!(
                "{verb} {} ({}, creator pid {} dead, no live holders)",
                info.name,
                info.kind.as_str(),
                info.creator.pid
            );
        }
        results.push(json!({
            "name": info.name,
            "kind": info.kind.as_str(),
            "removed": matches!(removed, Some(Ok(()))),
            "error": removed.and_then(Result::err),
        }));
    }
    if output.json {
        println!("{}", json!({ "dry_run": !yes, "objects": results }));
    } else if results.is_empty() {
        println!("nothing to collect: every mmf object has a live process");
    } else if !yes {
        println!("dry run: pass --yes to remove them");
    }
    Ok(())
}
