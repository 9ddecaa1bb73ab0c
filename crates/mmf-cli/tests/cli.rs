//! Runs the real `mmf` binary against segments and channels that other processes made: this
//! test binary re-launched as a child (`child` below: a camera publishing frames, a process
//! holding a segment, one that dies holding its write lock), and on Linux ffmpeg as an
//! outside producer and consumer.

use std::io::{BufRead, BufReader, Write};
use std::process::{Child, ChildStdin, Command, Output, Stdio};
use std::time::{Duration, Instant};

#[cfg(target_os = "linux")]
#[path = "../../mmf/examples/camera.rs"]
#[allow(dead_code)]
mod camera;

fn mmf(args: &[&str], stdin: &[u8]) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_mmf"))
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn mmf");
    // Ignored: a command that does not read its input closes the pipe early.
    let _ = child.stdin.take().unwrap().write_all(stdin);
    child.wait_with_output().unwrap()
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Runs `mmf args`, asserts it succeeded, and returns its standard output.
fn mmf_ok(args: &[&str]) -> String {
    let out = mmf(args, b"");
    assert!(out.status.success(), "mmf {args:?}: {}", stderr(&out));
    stdout(&out)
}

// Used by the Linux-only tests (most of this file: on Windows a segment lives only while
// its creator does, and there is no ffmpeg under wine).
#[cfg_attr(not(target_os = "linux"), allow(dead_code))]
fn json(text: &str) -> serde_json::Value {
    serde_json::from_str(text).unwrap_or_else(|e| panic!("not JSON ({e}): {text}"))
}

/// A unique name for this test.
fn unique(what: &str) -> String {
    use std::sync::atomic::{AtomicU32, Ordering::Relaxed};
    static NEXT: AtomicU32 = AtomicU32::new(0);
    format!(
        "mmf-cli-{what}-{}-{}",
        std::process::id(),
        NEXT.fetch_add(1, Relaxed)
    )
}

// ---- child processes ----------------------------------------------------------------------

const ROLE: &str = "MMF_CLI_TEST_ROLE";
const NAME: &str = "MMF_CLI_TEST_NAME";

#[test]
#[ignore = "not a test: the entry point of this file's child processes, which run it with --include-ignored"]
fn child() {
    let Ok(role) = std::env::var(ROLE) else {
        return;
    };
    let name = std::env::var(NAME).expect("child name");
    match role.as_str() {
        #[cfg(target_os = "linux")]
        "camera" => {
            // The camera demo's own loop, publishing 320x240 rgb24 at 30 fps until the one
            // "consumer" (a sleep) is done: the test runs `mmf` against it meanwhile.
            let config = camera::Config {
                width: 320,
                height: 240,
                fps: 30.0,
                consumers: 1,
                seconds: 20.0,
                name,
            };
            camera::run(&config, |_, _| {
                wait_for_stdin_eof();
                camera::Report {
                    frames: 0,
                    skipped: 0,
                    fps: 0.0,
                    latency_p50_us: 0.0,
                    latency_p99_us: 0.0,
                    cpu_percent: 0.0,
                    restarts: 0,
                }
            })
            .expect("camera");
        }
        "hold" => {
            let segment = mmf::MmfOptions::new(&name)
                .persist(true)
                .create(4096)
                .expect("create");
            let guard = segment
                .read()
                .map_err(|e| e.into_error())
                .expect("read lock");
            println!("ready");
            std::io::stdout().flush().unwrap();
            wait_for_stdin_eof();
            drop(guard);
        }
        "die-writing" => {
            let segment = mmf::MmfOptions::new(&name)
                .persist(true)
                .create(4096)
                .expect("create");
            let mut guard = segment
                .write()
                .map_err(|e| e.into_error())
                .expect("write lock");
            guard[..4].copy_from_slice(b"half");
            std::mem::forget(guard);
            println!("ready");
            std::io::stdout().flush().unwrap();
            // Dies holding the write lock (no unwinding, no destructors).
            std::process::exit(0);
        }
        other => panic!("unknown role {other}"),
    }
}

fn wait_for_stdin_eof() {
    std::io::copy(&mut std::io::stdin().lock(), &mut std::io::sink()).unwrap();
}

/// A child process, killed if the test ends without letting it finish.
#[cfg_attr(not(target_os = "linux"), allow(dead_code))]
struct Peer {
    child: Child,
    stdin: Option<ChildStdin>,
}

#[cfg_attr(not(target_os = "linux"), allow(dead_code))]
impl Peer {
    /// Starts role `role` on `name`; returns once it said "ready" (or at once, without
    /// `ready`).
    fn start(role: &str, name: &str, ready: bool) -> Peer {
        let mut child = Command::new(std::env::current_exe().unwrap())
            .args([
                "--exact",
                "child",
                "--include-ignored",
                "--nocapture",
                "--test-threads=1",
            ])
            .env(ROLE, role)
            .env(NAME, name)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn child");
        let stdin = child.stdin.take();
        if ready {
            let stdout = child.stdout.take().unwrap();
            let mut lines = BufReader::new(stdout).lines();
            // libtest has printed "test child ... " on the same line.
            let said = lines
                .by_ref()
                .map_while(Result::ok)
                .any(|l| l.ends_with("ready"));
            assert!(said, "{role} child ended without saying ready");
            // Keep reading: libtest's "ok" into a closed pipe would fail the child.
            std::thread::spawn(move || lines.for_each(drop));
        }
        Peer { child, stdin }
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Closes the child's input (its cue to finish) and waits for it.
    fn finish(mut self) {
        drop(self.stdin.take());
        let status = self.child.wait().unwrap();
        assert!(status.success(), "child failed: {status}");
    }
}

impl Drop for Peer {
    fn drop(&mut self) {
        if self.stdin.is_some() {
            // The test failed before `finish`: do not leave a camera running.
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// A camera child publishing 320x240 rgb24 frames on `name`; returns once frames flow.
#[cfg(target_os = "linux")]
fn camera(name: &str) -> Peer {
    let peer = Peer::start("camera", name, false);
    let start = Instant::now();
    loop {
        if let Ok(info) = mmf::inspect::segment(name) {
            if info
                .channel
                .is_some_and(|c| c.newest.is_some_and(|f| f.seq >= 3))
            {
                return peer;
            }
        }
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "camera did not start"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

// ---- usage --------------------------------------------------------------------------------

#[test]
fn usage_errors_exit_2_and_explain() {
    for args in [
        &[][..],
        &["frobnicate"],
        &["create", "x"],
        &["create", "x", "12Q"],
        &["read", "x", "--bogus"],
        &["info"],
        &[
            "frames",
            "publish",
            "x",
            "-W",
            "2",
            "-H",
            "2",
            "--pix-fmt",
            "rgb48",
        ],
        &["frames", "watch", "x", "--count", "many"],
    ] {
        let out = mmf(args, b"");
        assert_eq!(out.status.code(), Some(2), "{args:?}: {}", stderr(&out));
        let err = stderr(&out);
        // With no command at all, clap prints the help (and still exits 2).
        assert!(
            args.is_empty() || err.starts_with("error: "),
            "{args:?}: {err}"
        );
        assert!(
            err.contains("Usage: mmf") || err.contains("try '--help'"),
            "{args:?}: {err}"
        );
    }
    // Sizes clap cannot check: still exit 2, naming the flags.
    let out = mmf(
        &[
            "frames",
            "publish",
            "x",
            "-W",
            "3",
            "-H",
            "3",
            "--pix-fmt",
            "nv12",
        ],
        b"",
    );
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("--width 3 --height 3"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn version_and_help_for_every_command() {
    let version = mmf_ok(&["--version"]);
    assert_eq!(version.trim(), format!("mmf {}", env!("CARGO_PKG_VERSION")));
    let help = mmf_ok(&["--help"]);
    assert!(help.contains("Exit status: 0 success; 1"), "{help}");
    for command in [
        &["list"][..],
        &["info"],
        &["create"],
        &["read"],
        &["write"],
        &["repair"],
        &["remove"],
        &["gc"],
        &["frames", "watch"],
        &["frames", "snapshot"],
        &["frames", "cat"],
        &["frames", "publish"],
    ] {
        let args: Vec<&str> = command.iter().copied().chain(["--help"]).collect();
        let help = mmf_ok(&args);
        assert!(help.contains("Examples:"), "{command:?}: {help}");
        assert!(
            help.contains(&format!("mmf {}", command.join(" "))),
            "{command:?}: {help}"
        );
    }
}

#[test]
fn library_errors_exit_1_with_a_message_for_the_shell() {
    let out = mmf(&["info", "bad/name"], b"");
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("invalid segment name"),
        "{}",
        stderr(&out)
    );

    let missing = unique("missing");
    for args in [
        &["read", &missing][..],
        &["info", &missing],
        &["remove", &missing],
        &["repair", &missing],
        &["frames", "cat", &missing],
        &["frames", "snapshot", &missing, "x.png"],
    ] {
        let out = mmf(args, b"");
        assert_eq!(out.status.code(), Some(1), "{args:?}");
        assert!(
            stderr(&out).contains("`mmf list` shows what exists"),
            "{args:?}: {}",
            stderr(&out)
        );
    }
}

// ---- segments -----------------------------------------------------------------------------

/// The first column of `mmf list`'s rows.
#[cfg_attr(not(target_os = "linux"), allow(dead_code))]
fn listed_names(list: &str) -> Vec<String> {
    list.lines()
        .skip(1)
        .filter_map(|l| l.split_whitespace().next().map(str::to_owned))
        .collect()
}

/// Linux only: on Windows a segment dies with the `create` process that made it.
#[cfg(target_os = "linux")]
#[test]
fn create_write_read_list_remove_round_trip() {
    let name = unique("round");
    let out = mmf(&["create", &name, "4K", "--mode", "640"], b"");
    assert!(out.status.success(), "{}", stderr(&out));
    let meta = std::fs::metadata(format!("/dev/shm/{name}")).unwrap();
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(meta.permissions().mode() & 0o777, 0o640);

    let out = mmf(&["write", &name, "--offset", "10"], b"hello, segment");
    assert!(out.status.success(), "{}", stderr(&out));

    let out = mmf(&["read", &name, "--offset", "10", "--len", "14"], b"");
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(out.stdout, b"hello, segment");

    let out = mmf(&["read", &name, "--len", "32", "--hex"], b"");
    let hex = String::from_utf8(out.stdout).unwrap();
    assert!(hex.contains("68 65 6c 6c 6f"), "{hex}");

    let info = mmf_ok(&["info", &name]);
    assert!(
        info.contains("size:          8192 bytes (4096 data)"),
        "{info}"
    );
    assert!(info.contains("mode 0640"), "{info}");
    assert!(info.contains("lock:          free"), "{info}");

    assert!(listed_names(&mmf_ok(&["list"])).contains(&name));

    // Out of bounds is the library's typed error, and nothing is written.
    let out = mmf(
        &["write", &name, "--offset", "4090"],
        b"too long for the end",
    );
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("out of bounds"), "{}", stderr(&out));

    // Its creator (`mmf create`) has exited: nobody uses it, so it goes without --force.
    mmf_ok(&["remove", &name]);
    let out = mmf(&["info", &name], b"");
    assert_eq!(out.status.code(), Some(1));
}

/// A segment another process holds open with a read lock: `list` and `info` (text and JSON)
/// show the holder, `remove` refuses it until `--force` or until the holder is gone.
#[cfg(target_os = "linux")]
#[test]
fn a_segment_held_by_another_process_is_described_and_protected() {
    let name = unique("held");
    let holder = Peer::start("hold", &name, true);
    let pid = holder.pid();

    let info = json(&mmf_ok(&["info", &name, "--json"]));
    assert_eq!(info["kind"], "segment");
    assert_eq!(info["data_len"], 4096);
    assert_eq!(info["creator"]["alive"], "alive");
    assert_eq!(info["lock"]["state"]["state"], "read-locked");
    assert_eq!(info["lock"]["state"]["readers"], 1);
    let slots = info["lock"]["slots"].as_array().unwrap();
    assert!(
        slots
            .iter()
            .any(|s| s["alive"] == "alive" && s["read_locks"] == 1),
        "{info}"
    );
    assert_eq!(info["header"]["layout_version"], 1);
    assert_eq!(info["header"]["lock_kind"], "RWL4");

    let text = mmf_ok(&["info", &name]);
    assert!(text.contains("lock:          read-locked by 1"), "{text}");

    let list = json(&mmf_ok(&["list", "--json"]));
    let entry = list
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["name"] == name.as_str())
        .unwrap_or_else(|| panic!("{name} not listed"));
    assert_eq!(entry["in_use"], true);
    let row = mmf_ok(&["list"])
        .lines()
        .find(|l| l.starts_with(&format!("{name} ")))
        .map(str::to_owned)
        .expect("listed");
    assert!(row.contains("read-locked by 1"), "{row}");

    let out = mmf(&["remove", &name], b"");
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("in use"), "{}", stderr(&out));
    assert!(stderr(&out).contains("--force"), "{}", stderr(&out));
    assert!(stderr(&out).contains(&pid.to_string()), "{}", stderr(&out));

    holder.finish();
    let out = json(&mmf_ok(&["remove", &name, "--json"]));
    assert_eq!(out["removed"], true);
}

/// A writer that died holding the lock: `info` shows it, `repair` asks, then recovers the
/// lock and clears the poison, after which the segment locks cleanly again.
#[cfg(target_os = "linux")]
#[test]
fn repair_clears_the_poison_a_dead_writer_left() {
    let name = unique("poison");
    Peer::start("die-writing", &name, true).finish();

    let info = json(&mmf_ok(&["info", &name, "--json"]));
    assert_eq!(info["lock"]["state"]["state"], "write-locked", "{info}");
    assert_eq!(info["creator"]["alive"], "dead");
    let row = mmf_ok(&["list"])
        .lines()
        .find(|l| l.starts_with(&format!("{name} ")))
        .map(str::to_owned)
        .expect("listed");
    assert!(row.contains("(dead: mmf repair)"), "{row}");

    // No answer (closed input) is no.
    let out = mmf(&["repair", &name], b"n\n");
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(stderr(&out).contains("--yes"), "{}", stderr(&out));
    assert!(
        stdout(&out).contains("write-locked by a dead process"),
        "{}",
        stdout(&out)
    );

    let report = json(&mmf_ok(&["repair", &name, "--yes", "--json"]));
    assert_eq!(report["repaired"], true, "{report}");
    let info = json(&mmf_ok(&["info", &name, "--json"]));
    assert_eq!(info["lock"]["state"]["state"], "free", "{info}");
    assert_eq!(info["lock"]["poisoned"], false);
    let segment = mmf::Mmf::open(&name).unwrap();
    assert!(segment.write().is_ok(), "still poisoned after repair");
    drop(segment);

    let clean = mmf_ok(&["repair", &name]);
    assert!(clean.contains("nothing to repair"), "{clean}");
    mmf_ok(&["remove", &name]);
}

/// A file in /dev/shm that is not ours: listed as foreign, never removed without --force.
#[cfg(target_os = "linux")]
#[test]
fn foreign_files_are_listed_as_such_and_kept_unless_forced() {
    let name = unique("foreign");
    std::fs::write(format!("/dev/shm/{name}"), vec![0x5a; 8192]).unwrap();

    let list = json(&mmf_ok(&["list", "--json"]));
    let entry = list
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["name"] == name.as_str())
        .unwrap_or_else(|| panic!("{name} not listed"));
    assert_eq!(entry["kind"], "foreign");
    let row = mmf_ok(&["list"])
        .lines()
        .find(|l| l.starts_with(&format!("{name} ")))
        .map(str::to_owned)
        .expect("listed");
    assert!(
        row.contains("foreign") && row.contains("not an mmf object"),
        "{row}"
    );

    let out = mmf(&["info", &name], b"");
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("not an mmf object"),
        "{}",
        stderr(&out)
    );

    let out = mmf(&["remove", &name], b"");
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("--force"), "{}", stderr(&out));
    assert!(std::path::Path::new(&format!("/dev/shm/{name}")).exists());

    let out = mmf(&["gc", "--prefix", &name, "--yes", "--json"], b"");
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(json(&stdout(&out))["objects"], serde_json::json!([]));
    assert!(std::path::Path::new(&format!("/dev/shm/{name}")).exists());

    mmf_ok(&["remove", &name, "--force"]);
    assert!(!std::path::Path::new(&format!("/dev/shm/{name}")).exists());
}

/// `gc` lists objects whose processes are all dead, keeps live ones, and acts only with --yes.
#[cfg(target_os = "linux")]
#[test]
fn gc_removes_only_objects_nobody_uses_and_only_when_asked() {
    let prefix = unique("gc");
    let dead = format!("{prefix}-dead");
    let live = format!("{prefix}-live");
    mmf_ok(&["create", &dead, "4K"]);
    let holder = Peer::start("hold", &live, true);

    let dry = json(&mmf_ok(&["gc", "--prefix", &prefix, "--json"]));
    assert_eq!(dry["dry_run"], true);
    let names: Vec<&str> = dry["objects"]
        .as_array()
        .unwrap()
        .iter()
        .map(|o| o["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, [dead.as_str()], "{dry}");
    assert!(std::path::Path::new(&format!("/dev/shm/{dead}")).exists());

    let text = mmf_ok(&["gc", "--prefix", &prefix]);
    assert!(text.contains(&format!("would remove {dead}")), "{text}");

    let done = json(&mmf_ok(&["gc", "--prefix", &prefix, "--yes", "--json"]));
    assert_eq!(done["objects"][0]["removed"], true, "{done}");
    assert!(!std::path::Path::new(&format!("/dev/shm/{dead}")).exists());
    assert!(std::path::Path::new(&format!("/dev/shm/{live}")).exists());

    holder.finish();
    mmf_ok(&["remove", &live]);
}

// ---- channels -----------------------------------------------------------------------------

/// A frame channel is two objects, the channel and its reader table (`<name>+readers`):
/// `list` shows the channel only, and `remove` removes both, so a new writer can create the
/// channel again after one that crashed.
#[cfg(target_os = "linux")]
#[test]
fn list_and_remove_treat_a_channel_and_its_reader_table_as_one() {
    let name = unique("chan");
    let table = mmf::channel::reader_table_name(&name);
    let writer = mmf::FrameWriter::create(&name, mmf::FrameSpec::new(64)).unwrap();
    assert!(std::path::Path::new(&format!("/dev/shm/{table}")).exists());

    let listed = mmf_ok(&["list"]);
    assert!(listed_names(&listed).contains(&name), "{listed}");
    assert!(
        !listed.contains('+'),
        "the reader table is listed: {listed}"
    );

    // Its writer (this process) is alive: only --force removes it.
    let out = mmf(&["remove", &name], b"");
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(stderr(&out).contains("writer pid"), "{}", stderr(&out));
    mmf_ok(&["remove", &name, "--force"]);
    for gone in [&name, &table] {
        assert!(
            !std::path::Path::new(&format!("/dev/shm/{gone}")).exists(),
            "{gone} is still there"
        );
    }
    drop(writer);
    let _again = mmf::FrameWriter::create(&name, mmf::FrameSpec::new(64)).unwrap();
}

/// The camera demo's channel, made by another process: `list` and `info` show geometry,
/// writer, readers and the newest frame; `repair` refuses it (a channel has no lock).
#[cfg(target_os = "linux")]
#[test]
fn list_and_info_describe_a_camera_channel() {
    let name = unique("cam");
    let cam = camera(&name);
    let reader = mmf::FrameReader::open(&name).unwrap();

    let info = json(&mmf_ok(&["info", &name, "--json"]));
    assert_eq!(info["kind"], "channel");
    let channel = &info["channel"];
    assert_eq!(channel["writer"]["pid"], cam.pid());
    assert_eq!(channel["writer"]["alive"], "alive");
    assert_eq!(channel["max_frame_len"], 320 * 240 * 3);
    assert_eq!(channel["newest"]["width"], 320);
    assert_eq!(channel["newest"]["height"], 240);
    assert_eq!(channel["newest"]["pixel_format"], "rgb24");
    assert!(
        channel["newest"]["age_ms"].as_f64().unwrap() < 5_000.0,
        "{info}"
    );
    let readers = channel["readers"].as_array().unwrap();
    assert_eq!(readers.len(), 1, "{info}");
    assert_eq!(readers[0]["pid"], std::process::id());
    assert_eq!(readers[0]["alive"], "alive");

    let text = mmf_ok(&["info", &name]);
    assert!(
        text.contains(&format!("writer:      pid {} (alive)", cam.pid())),
        "{text}"
    );
    assert!(text.contains("320x240 rgb24"), "{text}");
    assert!(
        text.contains(&format!("pid {} (alive)", std::process::id())),
        "{text}"
    );

    let row = mmf_ok(&["list"])
        .lines()
        .find(|l| l.starts_with(&format!("{name} ")))
        .map(str::to_owned)
        .expect("listed");
    assert!(
        // One consumer, and the reader places the demo keeps for onlookers.
        row.contains("channel") && row.contains(&format!("readers 1/{}", 1 + camera::ONLOOKERS)),
        "{row}"
    );

    let out = mmf(&["repair", &name, "--yes"], b"");
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("only plain segments"),
        "{}",
        stderr(&out)
    );
    // A plain-segment command on a channel says which command to use instead.
    let out = mmf(&["read", &name], b"");
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("mmf frames cat"), "{}", stderr(&out));

    drop(reader);
    cam.finish();
}

#[cfg(target_os = "linux")]
#[test]
fn frames_watch_reports_rate_skips_and_latency() {
    let name = unique("watch");
    let cam = camera(&name);
    let out = mmf(
        &[
            "frames",
            "watch",
            &name,
            "--seconds",
            "1.2",
            "--interval",
            "0.4",
            "--json",
        ],
        b"",
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let records: Vec<serde_json::Value> = stdout(&out).lines().map(json).collect();
    assert!(records.len() >= 2, "{records:?}");
    let last = records.last().unwrap();
    assert_eq!(last["final"], true);
    assert!(records[..records.len() - 1]
        .iter()
        .all(|r| r["final"] == false));
    // 30 fps for 1.2 s: about 36 frames; leave room for a loaded machine.
    let total = last["total_frames"].as_u64().unwrap();
    assert!((10..=45).contains(&total), "{last}");
    assert!(records[0]["fps"].as_f64().unwrap() > 5.0, "{records:?}");
    assert!(
        records[0]["latency_p50_us"].as_f64().unwrap() > 0.0,
        "{records:?}"
    );
    assert_eq!(last["format"]["pixel_format"], "rgb24");

    let out = mmf(&["frames", "watch", &name, "--count", "5"], b"");
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stderr(&out).contains(": 5 frames"), "{}", stderr(&out));
    cam.finish();
}

/// `mmf frames snapshot` of the camera demo's channel decodes to a 320x240 RGB picture of
/// its colour bars.
#[cfg(target_os = "linux")]
#[test]
fn frames_snapshot_of_the_camera_demo_is_a_png_of_the_right_size() {
    let name = unique("snap");
    let cam = camera(&name);
    let path = std::env::temp_dir().join(format!("{name}.png"));
    let text = mmf_ok(&["frames", "snapshot", &name, path.to_str().unwrap()]);
    assert!(text.contains("320x240 rgb24"), "{text}");
    cam.finish();

    let decoder = png::Decoder::new(std::fs::File::open(&path).unwrap());
    let mut png = decoder.read_info().unwrap();
    let mut pixels = vec![0; png.output_buffer_size()];
    let frame = png.next_frame(&mut pixels).unwrap();
    assert_eq!((frame.width, frame.height), (320, 240));
    assert_eq!(frame.color_type, png::ColorType::Rgb);
    // The bottom-left pixel is one of the demo's colour bars (the first row carries the
    // frame number, and the bouncing square may sit anywhere else).
    let at = (239 * 320) * 3;
    let pixel = &pixels[at..at + 3];
    assert!(
        pixel.iter().all(|&c| c == 16 || c == 235),
        "not a colour bar: {pixel:?}"
    );
    std::fs::remove_file(&path).unwrap();
}

#[cfg(target_os = "linux")]
#[test]
fn frames_snapshot_refuses_a_format_it_cannot_convert() {
    let name = unique("snapfmt");
    let mut writer = mmf::FrameWriter::create(&name, mmf::FrameSpec::new(64)).unwrap();
    writer.set_meta(mmf::FrameMeta {
        width: 4,
        height: 4,
        pixel_format: mmf::channel::PixelFormat::Yuyv422.code(),
        tag: 0,
    });
    writer.publish(&[0; 32]).unwrap();
    let out = mmf(&["frames", "snapshot", &name, "/dev/null"], b"");
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("yuyv422, which snapshot cannot convert"),
        "{}",
        stderr(&out)
    );
}

#[cfg(target_os = "linux")]
#[test]
fn frames_cat_writes_whole_frames() {
    let name = unique("cat");
    let cam = camera(&name);
    let out = mmf(&["frames", "cat", &name, "--count", "4"], b"");
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(out.stdout.len(), 4 * 320 * 240 * 3);
    cam.finish();
}

/// Opens channel `name` as soon as a writer has created it.
fn open_when_created(name: &str) -> mmf::FrameReader {
    let start = Instant::now();
    loop {
        match mmf::FrameReader::open(name) {
            Ok(reader) => return reader,
            Err(mmf::Error::NotFound { .. }) if start.elapsed() < Duration::from_secs(10) => {
                std::thread::sleep(Duration::from_millis(5))
            }
            Err(e) => panic!("open {name}: {e}"),
        }
    }
}

/// `mmf frames publish` turns standard input into frames: exactly the frames written, with
/// the geometry and format given, and the channel closes at the end of input.
#[test]
fn frames_publish_turns_standard_input_into_frames() {
    let name = unique("pub");
    let mut publisher = Command::new(env!("CARGO_BIN_EXE_mmf"))
        .args([
            "frames",
            "publish",
            &name,
            "-W",
            "4",
            "-H",
            "2",
            "--pix-fmt",
            "gray",
        ])
        .args(["--wait-readers", "1"])
        .stdin(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut reader = open_when_created(&name);
    let mut input = publisher.stdin.take().unwrap();
    for n in 1..=5u8 {
        input.write_all(&[n; 8]).unwrap();
        input.flush().unwrap();
        let frame = reader.wait_next(Duration::from_secs(10)).unwrap();
        assert_eq!(&frame[..], &[n; 8]);
        assert_eq!(frame.seq(), u64::from(n));
        assert_eq!((frame.width(), frame.height()), (4, 2));
        assert_eq!(frame.pixel_format(), mmf::channel::PixelFormat::Gray.code());
    }
    // Half a frame, then the end of input: dropped with a warning, and the channel closes.
    input.write_all(&[9; 3]).unwrap();
    drop(input);
    let out = publisher.wait_with_output().unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("dropped 3 trailing bytes"),
        "{}",
        stderr(&out)
    );
    assert!(
        stderr(&out).contains("published 5 frames"),
        "{}",
        stderr(&out)
    );
    assert!(matches!(
        reader.wait_next(Duration::from_secs(5)),
        Err(mmf::Error::WriterGone { .. })
    ));
}

// ---- ffmpeg -------------------------------------------------------------------------------

/// Runs `script` with sh, `$MMF` set to the binary under test.
#[cfg(target_os = "linux")]
fn sh(script: &str) -> Child {
    Command::new("sh")
        .args(["-c", script])
        .env("MMF", env!("CARGO_BIN_EXE_mmf"))
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("sh")
}

#[cfg(target_os = "linux")]
fn require_ffmpeg() {
    let found = Command::new("ffmpeg")
        .arg("-version")
        .stdout(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    assert!(
        found,
        "ffmpeg is not installed: run `cargo xtask setup` (Debian package ffmpeg)"
    );
}

/// ffmpeg as a camera: its test pattern, 30 frames of 320x240 rgb24 at 30 fps, piped into
/// `mmf frames publish`, read by a Rust `FrameReader` that checks every frame's size and
/// that the sequence ends at 30.
#[cfg(target_os = "linux")]
#[test]
fn ffmpeg_produces_frames_through_mmf_frames_publish() {
    require_ffmpeg();
    let name = unique("ffpub");
    let pipeline = sh(&format!(
        "ffmpeg -v error -re -f lavfi -i testsrc=size=320x240:rate=30 -frames:v 30 \
         -f rawvideo -pix_fmt rgb24 - \
         | \"$MMF\" frames publish {name} --width 320 --height 240 --pix-fmt rgb24 --wait-readers 1"
    ));
    let mut reader = open_when_created(&name);
    let (mut received, mut last_seq) = (0u64, 0u64);
    loop {
        match reader.wait_next(Duration::from_secs(10)) {
            Ok(frame) => {
                assert_eq!(frame.len(), 320 * 240 * 3);
                assert_eq!((frame.width(), frame.height()), (320, 240));
                assert_eq!(
                    frame.pixel_format(),
                    mmf::channel::PixelFormat::Rgb24.code()
                );
                received += 1;
                last_seq = frame.seq();
            }
            Err(mmf::Error::WriterGone { .. }) => break,
            Err(e) => panic!("reading ffmpeg's frames: {e}"),
        }
    }
    let out = pipeline.wait_with_output().unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(last_seq, 30, "{}", stderr(&out));
    assert_eq!(received + reader.skipped(), 30);
    // Paced at 30 fps by ffmpeg (-re), a reader this close keeps up with nearly all of them.
    assert!(received >= 20, "received {received}");
}

/// ffmpeg as a consumer: `mmf frames cat` of the camera demo's channel piped into ffmpeg,
/// which decodes 30 raw frames (its framecrc muxer prints one line per frame).
#[cfg(target_os = "linux")]
#[test]
fn ffmpeg_consumes_frames_from_mmf_frames_cat() {
    require_ffmpeg();
    let name = unique("ffcat");
    let cam = camera(&name);
    let pipeline = sh(&format!(
        "\"$MMF\" frames cat {name} --count 30 \
         | ffmpeg -v error -f rawvideo -pix_fmt rgb24 -s 320x240 -i - -f framecrc -"
    ));
    let out = pipeline.wait_with_output().unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let frames: Vec<&str> = std::str::from_utf8(&out.stdout)
        .unwrap()
        .lines()
        .filter(|l| !l.starts_with('#'))
        .collect();
    assert_eq!(frames.len(), 30, "{}", stdout(&out));
    // framecrc's size column: every frame decoded whole.
    assert!(
        frames
            .iter()
            .all(|l| l.split(',').nth(4).map(str::trim) == Some("230400")),
        "{}",
        stdout(&out)
    );
    cam.finish();
}

/// `frames cat --every` fails (exit 1) when the consumer missed a frame: frame 1 is held in
/// the pipe (larger than its buffer) while frames 2 and 3 are published, so the next frame cat
/// gets is 3.
#[cfg(target_os = "linux")]
#[test]
fn frames_cat_every_fails_on_a_skipped_frame() {
    use std::io::Read;
    const LEN: usize = 256 << 10;
    let name = unique("every");
    let mut writer = mmf::FrameWriter::create(&name, mmf::FrameSpec::new(LEN)).unwrap();
    writer.publish(&vec![1; LEN]).unwrap();
    let mut cat = Command::new(env!("CARGO_BIN_EXE_mmf"))
        .args(["frames", "cat", &name, "--every", "--count", "3"])
        .args(["--timeout", "5000"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdout = cat.stdout.take().unwrap();
    let mut first = [0u8; 1];
    stdout.read_exact(&mut first).unwrap();
    assert_eq!(first, [1]);
    writer.publish(&vec![2; LEN]).unwrap();
    writer.publish(&vec![3; LEN]).unwrap();
    let mut rest = Vec::new();
    stdout.read_to_end(&mut rest).unwrap();
    let out = cat.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("skipped 1 frames"),
        "{}",
        stderr(&out)
    );
    assert_eq!(rest.len() + 1, LEN, "only frame 1 was written");
}
