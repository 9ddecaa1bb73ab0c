//! Installing mmf's SIGBUS handler must not open a moment in which a SIGBUS that is not
//! mmf's skips the application's own handler.
//!
//! The window, if there is one, lies between the system call that installs mmf's handler and
//! the moment the handler knows the previous disposition. To hit it every time rather than by
//! luck, this binary interposes `sigaction`: its own definition (below) takes the place of
//! libc's for every caller linked into it, mmf and std included, forwards to the real one, and
//! when armed raises a SIGBUS right after the call that installs a handler other than the
//! application's. A raised signal is delivered before `raise` returns, that is, exactly after
//! the install and before anything the installer does next. That stands for a SIGBUS from
//! anywhere else (a `kill`, a fault on another thread) landing in the same moment.
//!
//! Separate from `truncation` because the interposer replaces `sigaction` for the whole binary.
#![cfg(all(target_os = "linux", any(target_arch = "x86_64", target_arch = "x86")))]

mod common;

use std::ffi::{c_int, c_void};
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicUsize, Ordering::Relaxed};

use common::{say, unique_name, CHILD_TIMEOUT};
use mmf::Mmf;

#[test]
#[ignore = "not a test: the entry point of this file's child processes"]
fn child() {
    common::child_main(|role| match role {
        "install" => install_with_a_sigbus_in_the_window(),
        "displaced" => install_while_another_thread_installs(),
        other => panic!("unknown role {other}"),
    });
}

/// Set by the child just before its first mmf call; the interposer raises one SIGBUS after
/// the next install of a foreign handler and clears it.
static RAISE_AFTER_INSTALL: AtomicBool = AtomicBool::new(false);
/// Set by the child to have the interposer install [`late_handler`] right after the next
/// query of the SIGBUS disposition, as another thread of the application could at that moment.
static INSTALL_AFTER_QUERY: AtomicBool = AtomicBool::new(false);
/// libc's `sigaction`, found on the first call (std calls it at start-up, outside any handler).
static REAL_SIGACTION: AtomicUsize = AtomicUsize::new(0);

type SigactionFn =
    unsafe extern "C" fn(c_int, *const libc::sigaction, *mut libc::sigaction) -> c_int;

/// The interposed `sigaction` (see the module docs).
///
/// # Safety
/// As for libc's `sigaction`: `act` and `old` are null or valid.
#[export_name = "sigaction"]
unsafe extern "C" fn interposed_sigaction(
    sig: c_int,
    act: *const libc::sigaction,
    old: *mut libc::sigaction,
) -> c_int {
    // Relaxed: a function address; a thread that misses another's store looks it up again.
    let mut real = REAL_SIGACTION.load(Relaxed);
    if real == 0 {
        // SAFETY: a valid C string; RTLD_NEXT finds the definition after this executable's,
        // libc's.
        real = unsafe { libc::dlsym(libc::RTLD_NEXT, c"sigaction".as_ptr()) } as usize;
        assert_ne!(real, 0, "libc's sigaction not found");
        REAL_SIGACTION.store(real, Relaxed);
    }
    // SAFETY: `real` is libc's sigaction, which has this signature.
    let real: SigactionFn = unsafe { std::mem::transmute(real) };
    // SAFETY: the caller's arguments, passed on unchanged.
    let rc = unsafe { real(sig, act, old) };
    // Relaxed: as for RAISE_AFTER_INSTALL below.
    if sig == libc::SIGBUS && act.is_null() && INSTALL_AFTER_QUERY.swap(false, Relaxed) {
        let late = app_action(late_handler);
        // SAFETY: a live sigaction with a valid SA_SIGINFO handler.
        assert_eq!(unsafe { real(sig, &late, std::ptr::null_mut()) }, 0);
    }
    if sig == libc::SIGBUS && rc == 0 && !act.is_null() {
        // SAFETY: non-null, so valid (the caller's contract).
        let installed = unsafe { (*act).sa_sigaction };
        let foreign = installed != app_handler as AppHandler as usize
            && installed != late_handler as AppHandler as usize
            && installed != libc::SIG_DFL
            && installed != libc::SIG_IGN;
        // Relaxed: the flag is set and read on the child's one thread that calls mmf.
        if foreign && RAISE_AFTER_INSTALL.swap(false, Relaxed) {
            // SAFETY: raise has no preconditions.
            unsafe { libc::raise(libc::SIGBUS) };
        }
    }
    rc
}

type AppHandler = extern "C" fn(c_int, *mut libc::siginfo_t, *mut c_void);

/// SIGBUS signals that reached the application's handler.
static APP_HANDLED: AtomicU32 = AtomicU32::new(0);
/// SIGBUS signals that reached the handler installed between mmf's query and its install.
static LATE_HANDLED: AtomicU32 = AtomicU32::new(0);

/// Counts a sent SIGBUS in `counter`; exits on a real fault, which would be retried forever on
/// return (this test raises none).
fn count_sent(info: *mut libc::siginfo_t, counter: &AtomicU32) {
    // SAFETY: the kernel passes a valid siginfo_t to an SA_SIGINFO handler.
    if unsafe { (*info).si_code } > 0 {
        // SAFETY: _exit is async-signal-safe.
        unsafe { libc::_exit(3) };
    }
    // Relaxed: read by the same thread after the handler returned.
    counter.fetch_add(1, Relaxed);
}

extern "C" fn app_handler(_sig: c_int, info: *mut libc::siginfo_t, _context: *mut c_void) {
    count_sent(info, &APP_HANDLED);
}

extern "C" fn late_handler(_sig: c_int, info: *mut libc::siginfo_t, _context: *mut c_void) {
    count_sent(info, &LATE_HANDLED);
}

/// An SA_SIGINFO disposition running `handler`.
fn app_action(handler: AppHandler) -> libc::sigaction {
    // SAFETY: all-zero is a valid sigaction (SIG_DFL, no flags, empty mask).
    let mut action: libc::sigaction = unsafe { std::mem::zeroed() };
    action.sa_sigaction = handler as usize;
    action.sa_flags = libc::SA_SIGINFO;
    action
}

/// Installs `handler` as the application would.
fn install_app_handler(handler: AppHandler) {
    let action = app_action(handler);
    // SAFETY: a live sigaction with a valid SA_SIGINFO handler.
    let rc = unsafe { libc::sigaction(libc::SIGBUS, &action, std::ptr::null_mut()) };
    assert_eq!(rc, 0);
}

/// Child: installs an application SIGBUS handler, then creates a segment (the process's first,
/// so it installs mmf's handler) with the interposer armed, and reports how many SIGBUS
/// signals its handler saw. Killed by SIGBUS if the raised one found mmf's handler installed
/// but not yet knowing the application's.
fn install_with_a_sigbus_in_the_window() {
    install_app_handler(app_handler);
    RAISE_AFTER_INSTALL.store(true, Relaxed);
    let segment = Mmf::create(&unique_name("install"), 4096).expect("create");
    assert!(
        !RAISE_AFTER_INSTALL.load(Relaxed),
        "creating the first segment installed no SIGBUS handler"
    );
    say("handled", APP_HANDLED.load(Relaxed));
    drop(segment);
}

/// Child: installs an application SIGBUS handler, then creates its first segment while
/// "another thread" (the interposer) installs a second handler between mmf's look at the
/// disposition and its install; then raises a SIGBUS, which mmf must pass to the handler it
/// displaced (the second), not to the one it saw first.
fn install_while_another_thread_installs() {
    install_app_handler(app_handler);
    INSTALL_AFTER_QUERY.store(true, Relaxed);
    let segment = Mmf::create(&unique_name("displaced"), 4096).expect("create");
    assert!(
        !INSTALL_AFTER_QUERY.load(Relaxed),
        "mmf did not query the SIGBUS disposition before installing its handler"
    );
    // SAFETY: raise has no preconditions.
    unsafe { libc::raise(libc::SIGBUS) };
    say("first", APP_HANDLED.load(Relaxed));
    say("late", LATE_HANDLED.load(Relaxed));
    drop(segment);
}

#[test]
fn a_sigbus_while_installing_the_handler_reaches_the_application_handler() {
    let mut child = common::child("install").spawn();
    let out = child.wait(CHILD_TIMEOUT);
    assert!(
        out.status.success(),
        "the child died (signal {:?}): the SIGBUS raised right after mmf installed its \
         handler did not reach the application's\n{out:?}",
        std::os::unix::process::ExitStatusExt::signal(&out.status)
    );
    assert_eq!(out.value("handled"), 1, "{out:?}");
}

#[test]
fn a_handler_installed_while_mmf_installs_its_own_is_the_one_chained_to() {
    let mut child = common::child("displaced").spawn();
    let out = child.wait(CHILD_TIMEOUT);
    assert!(out.status.success(), "{out:?}");
    assert_eq!(
        (out.value("first"), out.value("late")),
        (0, 1),
        "a foreign SIGBUS goes to the handler mmf's install displaced: {out:?}"
    );
}
