//! The lock that lives inside the segment, and how it survives processes that die holding it.
//!
//! A segment's header holds a [`LockArea`]: 2048 bytes of 32-bit atomic words that belong to
//! the lock type the segment was created with. Every process that maps the segment locks the
//! same words, so they all see and respect the same lock. The lock type is pluggable through
//! [`RawRwLock`]; [`SharedRwLock`] is the default.
//!
//! Of the area, the public API holds its size, [`LOCK_AREA_WORDS`] (512 words, 2048 bytes):
//! it is all a lock may use, fixed by the header's layout version, and someone bringing their
//! own lock plans its words within it. How the default lock uses its words (the tables and
//! bits below: `WRITER`, `PARKED`, `SLOTS` ...) is documented for whoever reads the bytes
//! (other binaries, a debugger), but is not API: those constants are the crate's own, and
//! change with the lock's [`KIND`](RawRwLock::KIND).
//!
//! The code: this file holds the trait and what it hands to a lock ([`Context`],
//! [`Waiter`], [`LockArea`]); `layout.rs` the default lock's words and bits; `protocol.rs`
//! how its readers and writers enter, wait and leave; `slots.rs` its slot table and the
//! recovery of dead holders; `model.rs` the loom model's futex; `tests.rs` and
//! `loom_tests.rs` the unit tests and the models. `winmmf.rs` holds a second lock,
//! [`WinMmfLock`] (the `winmmf` crate's one-word spin lock), and `winmmf_tests.rs` its tests.
//!
//! # Bringing your own lock
//!
//! A lock is a type that implements [`RawRwLock`] on the words of a [`LockArea`], and it is
//! chosen per segment with [`MmfOptions::lock`](crate::MmfOptions::lock); every process must
//! open the segment with the same type (the header records [`RawRwLock::KIND`]). The crate
//! has two: [`SharedRwLock`] (the default, below) and [`WinMmfLock`] (the `winmmf` crate's
//! one-word spin lock, see `lock/winmmf.rs`). A third, as small as a lock can be: a mutex
//! (readers exclude each other too) in word 0 that sleeps through the segment's [`Waiter`]:
//!
//! ```
//! use std::sync::atomic::Ordering::{Acquire, Relaxed, Release};
//! use std::time::Instant;
//! use mmf::{Acquired, Context, LockArea, MmfOptions, NotAcquired, RawRwLock};
//!
//! /// Word 0: 0 free, 1 held. No recovery: a holder that dies wedges it.
//! struct Mutex;
//!
//! impl Mutex {
//!     fn try_take(area: &LockArea) -> Result<Acquired, NotAcquired> {
//!         // Acquire: pairs with the Release store in `give_back`.
//!         match area.words()[0].compare_exchange(0, 1, Acquire, Relaxed) {
//!             Ok(_) => Ok(Acquired::Clean),
//!             Err(_) => Err(NotAcquired::Unavailable),
//!         }
//!     }
//!     fn take(area: &LockArea, ctx: &Context<'_>, deadline: Option<Instant>)
//!         -> Result<Acquired, NotAcquired> {
//!         loop {
//!             if let Ok(acquired) = Self::try_take(area) {
//!                 return Ok(acquired);
//!             }
//!             if deadline.is_some_and(|d| Instant::now() >= d) {
//!                 return Err(NotAcquired::Unavailable);
//!             }
//!             // Sleeps in the kernel while the word is still 1 (a futex on Linux).
//!             ctx.waiter().wait(&area.words()[0], 1, deadline);
//!         }
//!     }
//!     fn give_back(area: &LockArea, ctx: &Context<'_>) {
//!         // Release: pairs with the Acquire compare-exchange in `try_take`.
//!         area.words()[0].store(0, Release);
//!         // A real lock would wake only when someone sleeps (a "parked" bit).
//!         ctx.waiter().wake_all(&area.words()[0]);
//!     }
//! }
//!
//! // SAFETY: one holder at a time of either kind (compare-exchange 0 -> 1), Acquire on
//! // taking and Release on giving back, and "MTX1" is no other lock's KIND.
//! unsafe impl RawRwLock for Mutex {
//!     const KIND: u32 = u32::from_be_bytes(*b"MTX1");
//!     fn init(area: &LockArea) {
//!         // Relaxed: the header's publication orders it before any opener.
//!         area.words()[0].store(0, Relaxed);
//!     }
//!     fn try_lock_shared(area: &LockArea, _: &Context<'_>) -> Result<Acquired, NotAcquired> {
//!         Self::try_take(area)
//!     }
//!     fn lock_shared(area: &LockArea, ctx: &Context<'_>, deadline: Option<Instant>)
//!         -> Result<Acquired, NotAcquired> {
//!         Self::take(area, ctx, deadline)
//!     }
//!     unsafe fn unlock_shared(area: &LockArea, ctx: &Context<'_>) {
//!         Self::give_back(area, ctx)
//!     }
//!     fn try_lock_exclusive(area: &LockArea, _: &Context<'_>) -> Result<Acquired, NotAcquired> {
//!         Self::try_take(area)
//!     }
//!     fn lock_exclusive(area: &LockArea, ctx: &Context<'_>, deadline: Option<Instant>)
//!         -> Result<Acquired, NotAcquired> {
//!         Self::take(area, ctx, deadline)
//!     }
//!     unsafe fn unlock_exclusive(area: &LockArea, ctx: &Context<'_>) {
//!         Self::give_back(area, ctx)
//!     }
//! }
//!
//! # fn main() -> mmf::Result<()> {
//! let name = format!("byo-lock-{}", std::process::id());
//! let segment = MmfOptions::new(&name).lock::<Mutex>().create(4096)?;
//! segment.write_at(0, b"mine")?;
//! let other = MmfOptions::new(&name).lock::<Mutex>().open()?;
//! let guard = other.read()?;
//! assert_eq!(&guard[..4], b"mine");
//! assert!(matches!(segment.try_write(), Err(mmf::LockError::Failed(mmf::Error::WouldBlock))));
//! drop(guard);
//! // Another lock type cannot open it.
//! assert!(matches!(mmf::Mmf::open(&name), Err(mmf::Error::LockMismatch { .. })));
//! # Ok(()) }
//! ```
//!
//! # The default lock's area
//!
//! [`SharedRwLock`] divides the area into a control block of 16 words and a table of
//! `SLOTS` (124) *handle slots* of 4 words each. Every read-write [`Mmf`](crate::Mmf) handle
//! claims one slot when it is created or opened ([`RawRwLock::attach`]) and frees it when it
//! is dropped; the slot records which process the handle lives in and how many read locks
//! it holds, so that the read locks of a process that dies can be told apart from everyone
//! else's and taken back.
//!
//! | word | name         | meaning                                                               |
//! |-----:|--------------|-----------------------------------------------------------------------|
//! |    0 | lock word    | writer, its slot, parked and poisoned bits (diagram below)            |
//! |    1 | drain word   | 1 while the writer sleeps waiting for readers to leave                |
//! |    2 | slots used   | high-water mark of claimed slots: writers scan slots `0..slots_used`  |
//! |    3 | overflow     | read locks held through untracked handles (low 17 bits)               |
//! | 4–15 | reserved     | zero                                                                  |
//! | 16 + 4·i | slot `i` tag | state, generation and read-lock count of slot `i` (diagram below) |
//! | 17 + 4·i | slot `i` pid | process id of the handle's process                              |
//! | 18 + 4·i | slot `i` start lo | low 32 bits of the process's start time                    |
//! | 19 + 4·i | slot `i` start hi | high 32 bits of the process's start time                   |
//!
//! The lock word:
//!
//! ```text
//!  31   30   29   28   27 ....... 20   19 .............. 8   7 ............ 0
//! +----+----+----+----+---------------+---------------------+----------------+
//! | W  | P  | PO | D  | reserved (0)  | owner generation    |  owner slot    |
//! +----+----+----+----+---------------+---------------------+----------------+
//! ```
//!
//! - `W` (`WRITER`): a writer owns the lock, or has claimed it and waits for the readers
//!   inside to leave; no new reader enters while it is set.
//! - `P` (`PARKED`): someone sleeps (or is about to) in a kernel wait on the lock word;
//!   whoever clears `W` clears it too and wakes every sleeper. Lock waiters set it while `W`
//!   is set; a waiter for the next write ([`RawRwLock::wait_for_release`]) sets it whether
//!   `W` is set or not, and the next writer keeps it until its release wakes them.
//! - `PO` (`POISONED`): a writer died holding the lock; cleared only by
//!   [`RawRwLock::clear_poison`].
//! - `D` (`DRAINING`): the writer that set `W` still waits for readers to leave, so it has
//!   changed no data yet; set only while `W` is, by the writer itself, and cleared by it
//!   before it returns with the lock.
//! - owner slot (`OWNER`): the slot of the handle whose writer set `W`, written by the very
//!   compare-exchange that sets `W`, so there is no instant at which the lock is held by an
//!   unknown process; `OWNER` itself (all ones) means an untracked handle.
//! - owner generation (`OWNER_GEN`): the generation of that slot when the handle claimed
//!   it (zero for an untracked handle). With it, the owner field names one claim of one slot,
//!   so a writer whose slot was taken back and claimed again by another handle can never
//!   release, or be mistaken for, the new claimant's write lock (see "Releasing only what is
//!   still yours").
//!
//! A slot's tag word:
//!
//! ```text
//!  31  30  29 ............... 18   17   16 .................... 0
//! +-------+----------------------+----+----------------------------+
//! | state |  generation (12 bits) | K  |  read locks held (17 bits) |
//! +-------+----------------------+----+----------------------------+
//! ```
//!
//! - state: free, claiming (the claimer is writing its identity), active, or reclaiming (a
//!   recoverer is taking back a dead process's share).
//! - generation: bumped on every claim, so a recoverer that read the slot before it was freed
//!   and claimed again cannot mistake the new owner for the dead one (its compare-exchange
//!   fails).
//! - `K` (held): the handle holds the kernel lock on the slot's byte (see "Owner death"), so
//!   recoverers ask the kernel about that byte, not about the recorded process.
//! - read locks: how many read locks the handle's threads hold. A reader's count lives only
//!   here, never in the lock word, so taking it back is exact: one compare-exchange from
//!   (active, generation, n) to (reclaiming, generation, 0).
//!
//! # Fairness
//!
//! Writers are not starved: a writer sets `W` as soon as no other writer has it, even while
//! readers are inside, so new readers hold back, the readers in place drain, and the writer
//! gets in. Readers are not starved by a stream of writers either: releasing the write lock
//! wakes every sleeper, and readers then compete on equal terms with the next writer. The
//! cost of writer preference: a thread that already holds a read lock and asks for another one
//! may deadlock with a waiting writer, so read locks are not recursive.
//!
//! # Waiting
//!
//! An uncontended read lock is one compare-exchange on the handle's own slot plus a load of
//! the lock word; an uncontended write lock is one compare-exchange on the lock word plus a
//! scan of the used slots' counts. When the lock is unavailable, the waiter spins a few
//! rounds (126 `spin_loop` hints in all, no `sched_yield`: see `SpinWait`), then sleeps in
//! the kernel through the segment's [`Waiter`] (a shared futex on Linux, a named semaphore
//! on Windows): on the lock word (setting `P`) while another writer holds `W`, or on the
//! drain word while readers are still inside. A blocked process burns no CPU.
//!
//! # Owner death
//!
//! A sleeper never sleeps longer than the recovery interval
//! ([`MmfOptions::recovery_interval`](crate::MmfOptions::recovery_interval), 50 ms by
//! default). Each time an interval has passed it asks the OS whether the holders it waits
//! for can still touch the lock: the writer named by the owner slot, or (for a writer waiting
//! for readers to leave) every slot with read locks. A slot whose holder cannot is taken back
//! with one compare-exchange on its tag, so two recoverers cannot both take it; the winner
//! clears `W` if the dead holder owned it (setting `POISONED`), then frees the slot and wakes
//! the sleepers. So a holder killed at any instant unblocks the others at most one recovery
//! interval (plus scheduling) after its death.
//!
//! ## Who decides that a holder is gone: the kernel (Linux)
//!
//! A pid lookup cannot decide it safely. In another PID namespace (containers sharing
//! `/dev/shm`) the recorded pid names nobody, or somebody else; a process whose main thread
//! has exited shows as a zombie while its other threads still write; and a process that
//! `exec`s keeps its pid and start time although the program that held the lock is gone.
//! Each of these either breaks exclusion (two writers) or keeps a lock that nobody can
//! release. So on Linux every tracked handle holds a kernel lock whose lifetime is exactly
//! "some program can still use this handle", and recoverers ask the kernel about it:
//!
//! - **What is held.** Each read-write handle maps the segment through its own `shm_open`,
//!   that is its own *open file description*, with `O_CLOEXEC`. When it claims slot `i` it
//!   takes an open-file-description lock (`fcntl(F_OFD_SETLK)`, a write lock on one byte)
//!   on the first byte of the slot's tag word, `4 * (16 + 4i)` bytes into the lock area,
//!   and records `K` in the tag. The lock is advisory and touches no data; it belongs to
//!   the open file description, not to a process or a thread.
//! - **What is asked.** A recoverer that finds slot `i` active with `K` set asks
//!   `fcntl(F_OFD_GETLK)` on its own descriptor whether another open file description holds
//!   that byte: held means alive, free means gone. The kernel's answer does not depend on
//!   pids, so it is the same in every PID namespace, and it is never fooled by pid reuse.
//!   The recorded pid and start time stay in the slot, for diagnostics and for the fallback.
//! - **When it is released.** The kernel drops an open-file-description lock when the last
//!   descriptor referring to that description is closed: the handle is dropped, the process
//!   exits or is killed (`kill -9` included), or it `exec`s (the descriptor is `O_CLOEXEC`,
//!   so exec closes it). So a holder that execs is recovered within one interval of the
//!   exec, not when the new program ends.
//! - **Threads, zombie leader.** The descriptor lives in the process's descriptor table,
//!   which all its threads share; a main thread that exits (`SYS_exit`) while another thread
//!   holds the lock leaves the table, and so the lock, held. No exclusion break.
//! - **fork.** A forked child shares its parent's open file descriptions, so the byte stays
//!   held while the child lives, even after the parent died: conservative (the parent's
//!   share is recovered only once the child exits or execs). A child must not use its
//!   parent's handle anyway (see below); it opens the segment again.
//! - **Our own process.** Two handles of one process have different open file
//!   descriptions, so a recoverer sees another handle of its own process as alive, as it
//!   should. A handle never asks about its own slot (its own lock does not conflict with
//!   itself, so the kernel would report it free).
//! - **Order.** A claimer marks the slot claiming, takes the byte, and only then marks it
//!   active; `detach` frees the slot and only then releases the byte. So there is no instant
//!   at which an active slot's byte is free while its holder can run. A claimer that cannot
//!   take the byte (the previous owner freed the slot but has not released the byte yet)
//!   gives the slot back and tries the next one. A recoverer that read the tag before a
//!   detach and asked the kernel after it sees a free byte, but its compare-exchange then
//!   fails: the tag is no longer the active one it read.
//! - **A handle dropped with leaked guards.** `detach` leaves the slot (and the lock it
//!   holds) in place, but dropping the handle closes its descriptor and so releases the
//!   byte: the slot is then recovered like a dead one's (poisoning, if it held `W`). Nothing
//!   can use that handle any more, so this is what recovery is for.
//! - **32-bit.** The lock is asked for with the `fcntl64` system call and `struct flock64`
//!   on 32-bit Linux (the `fcntl` system call refuses `F_OFD_*` there), `fcntl` and the
//!   same layout on 64-bit: the raw system call, so no C library's translation is relied on.
//!
//! ## Where there is no such kernel lock: the process identity
//!
//! If taking the byte fails for any reason other than another holder (macOS and FreeBSD have
//! no open-file-description byte locks; a Linux sandbox may refuse them), the handle records
//! `K` clear and recoverers fall back to the recorded process identity: pid plus start time,
//! so a reused pid is not mistaken for it (Linux: `starttime` from `/proc`, and a zombie
//! counts as dead; Windows: the creation time; macOS/FreeBSD: `kill(pid, 0)`, the pid
//! alone). This fallback has the weaknesses above: it must not be used across PID
//! namespaces (a holder there may be declared dead while it writes), a zombie leader counts
//! as dead on Linux, an exec'd holder is recovered only when its process ends, and on
//! macOS/FreeBSD a reused pid keeps a dead holder's share until that process ends too.
//!
//! **Windows** has no PID namespaces: a process id names one process system-wide (Windows
//! containers that share a kernel see the same ids, and their named objects live in a
//! separate namespace anyway). A holder is identified by pid plus creation time: the
//! recoverer opens the process (`OpenProcess`), and while it holds that handle the process
//! object, and so its pid, cannot be reused, so the creation time it reads
//! (`GetProcessTimes`) and the exit state it asks (`WaitForSingleObject` on the handle, which
//! is signalled once the process has exited, or `GetExitCodeProcess`) belong to one and the
//! same process; a different creation time means the pid was reused, and a pid with no
//! process object means it is gone. A process exits only when its last thread does, so a main
//! thread that ends while another thread holds the lock does not make it look dead. There is
//! no exec (a new program is a new process) and no fork. What remains: a process that is
//! alive but has closed the handle (dropped the `Mmf` with a leaked guard) keeps its share
//! until it exits, since a section has no per-handle lock to ask about.
//!
//! - **Liveness unknown.** When the OS will not say whether a holder lives (for instance no
//!   permission to inspect it), it is treated as alive: its share is never taken, and
//!   waiters keep waiting until their deadline. Breaking exclusion on a guess would be worse.
//! - **Slot table full.** A handle that finds every slot taken first takes back the slots of
//!   dead processes; if all `SLOTS` belong to live processes it proceeds *untracked*: its
//!   read locks are counted in the overflow word and its write lock carries owner `OWNER`.
//!   The lock works as usual, but if its process dies holding a lock, that lock is never
//!   recovered: the overflow count (or `W`) stays set, writers (or everyone) wait until their
//!   deadlines, and only recreating the segment clears it. Keep fewer than 124 read-write
//!   handles per segment open at a time to stay tracked.
//! - **Killed while claiming a slot.** A process killed in the few instructions between
//!   claiming a free slot and marking it active leaves that slot claimed forever (it holds no
//!   lock, so nobody waits for it); the table has one slot fewer until the segment is
//!   recreated.
//! - **A writer killed while waiting for readers to leave** has set `W` (and blocked new
//!   readers) but also `D`: its `W` is taken back like any dead writer's, without poisoning,
//!   since it changed nothing. Only the writer's first look at the readers comes before `D`
//!   (an uncontended write lock never sets it, to keep it one compare-exchange), so a writer
//!   killed in that sub-microsecond window poisons the lock although it wrote nothing.
//! - **fork.** A handle belongs to the process that created or opened it: a forked child must
//!   open the segment again rather than use its parent's handle (which, on Linux, it keeps
//!   alive in the eyes of recoverers while it lives: see above).
//!
//! The data a dead writer left is not trusted: the next acquisitions report
//! [`Acquired::Poisoned`] until someone calls [`RawRwLock::clear_poison`]. A dead reader
//! changed nothing and poisons nothing.
//!
//! ## Releasing only what is still yours
//!
//! With the kernel's answer a live holder is never taken for dead; with the fallback it can
//! be (see above), and a corrupt peer can make anyone look dead. So no release trusts that
//! the releaser still owns what it releases:
//!
//! - A handle's token is its slot *and the generation it claimed the slot with*, and the
//!   lock word's owner field holds both (`OWNER`, `OWNER_GEN`). Unlocking is a
//!   compare-exchange from "`W`, owned by this claim" to free; any other change to the lock
//!   word (`DRAINING`, the slow release) is a compare-exchange loop that gives up as soon as
//!   the word no longer names this claim. A handle whose slot was taken back and claimed by
//!   another handle (same slot, next generation) therefore cannot release, or mark, the new
//!   claimant's write lock.
//! - A read lock is counted in and out by compare-exchanges on the slot's tag, which fail
//!   once the tag is no longer "active, our generation"; a recoverer drops a dead slot's
//!   count with the slot, so a robbed reader's release leaves the new owner's count alone.
//! - `detach` frees the slot only while its tag is still our claim.
//!
//! A robbed holder learns it. A writer whose release finds the lock no longer its own sets
//! `PO` (what it wrote may have interleaved with the next writer's), so its next
//! acquisition, and everyone's, reports [`Acquired::Poisoned`]. A writer still waiting for
//! readers when robbed returns [`NotAcquired::Revoked`] instead of the lock. And a handle
//! whose slot is no longer its claim gets [`NotAcquired::Revoked`] from every acquisition
//! (the segment reports it as a typed error): it could not be recovered if it died holding
//! a lock, so it must be opened again. The generation has 12 bits: a holder robbed and then
//! silent while its slot is claimed 4096 more times would match again.
//!
//! # Model checking
//!
//! The atomics are routed through a small `sync` module so that this same code runs under
//! [loom](https://docs.rs/loom); the loom tests (`lock/loom_tests.rs`) call the real lock
//! functions and check exclusion, writer preference, lost wake-ups (the futex is modelled
//! with a loom condition variable, so a lost wake-up is a deadlock loom reports), the
//! withdrawal of a writer whose deadline passed, and the recovery paths, including that two
//! recoverers take a dead slot back exactly once and that a stale one cannot take a slot
//! that was reclaimed and claimed again:
//! `RUSTFLAGS="--cfg loom" cargo test -p mmf --lib --release loom` (a few minutes on two
//! cores; add `-- --nocapture` to see how many interleavings each model explored).
//!
//! The liveness oracle of the models (`Kernel` in `loom_tests`) answers as the kernel does
//! about the slots' byte locks: a byte held by another handle whose process has not died is
//! alive; a free byte, or one whose holder died, is dead; a claimer finds a byte still held
//! by a live handle busy; and a handle asking about its own byte hears "free", as with real
//! open-file-description locks, so a model in which a waiter asks about its own slot breaks
//! exclusion.
//!
//! What the models do not cover:
//!
//! - **Preemption bound 3.** Loom explores every interleaving in which the running threads
//!   are switched away from involuntarily at most 3 times in all (switching at a blocking
//!   point — a join, a lock, a sleep on the model futex, a yield — is free). A bug that only
//!   shows when 4 or more such switches line up is not found. This is accepted because every
//!   race the lock's correctness rests on is a window between two consecutive steps of one
//!   thread — a lost wake-up between checking the word and sleeping, a double reclaim between
//!   reading a slot's tag and changing it, a Dekker pair between a store and a load — and
//!   opening one such window takes one preemption, two windows two; every deliberately
//!   broken variant of the lock in `xtask/mutations/lock.txt` that a model is meant to catch
//!   is caught within the bound, and loom's own guidance is that 2 or 3 catches most bugs.
//!   The bound keeps the run to minutes: at 3, the exclusion model alone explores about
//!   450,000 interleavings.
//! - **Small worlds.** Each model is one scenario with at most four threads and three handle
//!   slots (the area is shrunk under loom); more threads or slots only repeat the same
//!   steps on more words.
//! - **Time.** The model futex never times out: a deadline is either none or one that has
//!   already passed (`Some(Instant::now())`, the timed-out writer), the recovery interval is
//!   zero, and a death turns every later sleep into a yield. How soon a waiter gets in —
//!   within one recovery interval of a death, within a bound of a wake-up — is checked by
//!   the native tests, which watch a sleeper in the kernel.
//! - **Memory model.** Loom treats `SeqCst` accesses as `AcqRel`, so the store-load (Dekker)
//!   pairs become read-modify-writes under loom (`sync::load_sc`), which restore the
//!   guarantee the native code has; and it does not explore load buffering, which the C11
//!   model allows for `Relaxed` loads (loom's README, "Unsupported features").
//! - **Other processes' garbage.** The models run the protocol as written; corrupt or
//!   hostile words in the area are the unit tests' concern.

use std::time::{Duration, Instant};

pub(crate) use crate::liveness::Presence;
pub use crate::liveness::{Hold, Holder, Liveness, ProcessId};
use crate::sync::AtomicU32;
use crate::sync::Ordering::Relaxed;
#[cfg(loom)]
use crate::sync::{self, Ordering::SeqCst};

mod layout;
#[cfg(all(test, loom))]
mod loom_tests;
#[cfg(loom)]
mod model;
mod protocol;
mod slots;
// Read-only decoding of the area for `crate::inspect` (`mmf info`).
#[cfg(not(loom))]
pub(crate) mod inspect;
#[cfg(all(test, not(loom)))]
mod tests;
pub(crate) mod winmmf;
#[cfg(all(test, not(loom)))]
mod winmmf_tests;

pub use layout::SharedRwLock;
pub use winmmf::WinMmfLock;
// The token of a handle without a slot, which the segment also gives its read-only handles.
#[cfg(not(loom))]
pub(crate) use layout::UNTRACKED;
/// The default lock's bits and slot count, for the crate's integration tests that forge or
/// check lock words (`testing` feature, enabled only by the crate's own dev-dependency): not
/// API, and free to change with the lock's protocol.
#[cfg(feature = "testing")]
#[doc(hidden)]
pub use layout::{DRAINING, OWNER, OWNER_GEN, PARKED, POISONED, SLOTS, WRITER};
#[cfg(loom)]
pub(crate) use model::ModelFutex;

/// Number of 32-bit words in a [`LockArea`].
#[cfg(not(loom))]
pub const LOCK_AREA_WORDS: usize = 512;
/// Under loom the area is shrunk to three slots of the default lock (its 16 control words
/// plus 3 slots of 4 words): the model checker tracks every atomic.
#[cfg(loom)]
pub const LOCK_AREA_WORDS: usize = 16 + 3 * 4;

/// The part of the segment header that belongs to the lock: 2048 bytes of atomic words,
/// zeroed at creation, starting on its own cache line.
///
/// A custom [`RawRwLock`] keeps all of its state here. The words are shared with every
/// process that maps the segment, including buggy ones: treat any value read as untrusted.
#[repr(C, align(64))]
pub struct LockArea {
    words: [AtomicU32; LOCK_AREA_WORDS],
}

impl LockArea {
    /// Word `index` of the area (`index < LOCK_AREA_WORDS`), or `None` past the end.
    pub fn word(&self, index: usize) -> Option<&AtomicU32> {
        self.words.get(index)
    }

    /// All words of the area.
    pub fn words(&self) -> &[AtomicU32; LOCK_AREA_WORDS] {
        &self.words
    }

    /// A zeroed area in ordinary memory, for the lock's unit tests and the loom model.
    #[cfg(any(test, loom))]
    pub(crate) fn new_zeroed() -> Self {
        LockArea {
            words: std::array::from_fn(|_| AtomicU32::new(0)),
        }
    }
}

/// Puts a thread to sleep on a word of the segment until another process wakes it.
///
/// Handed to [`RawRwLock`] implementations by the segment (inside a [`Context`]). Works across
/// processes: on Linux it is a shared (non-private) futex; on Windows a named semaphore per
/// segment with a waiter count in the header; on platforms without either, a short sleep (see
/// the crate's platform table).
#[derive(Clone, Copy)]
pub struct Waiter<'a> {
    #[cfg(not(loom))]
    os: &'a crate::sys::Waiter,
    #[cfg(not(loom))]
    sleepers: &'a std::sync::atomic::AtomicU32,
    #[cfg(loom)]
    model: &'a ModelFutex,
}

impl<'a> Waiter<'a> {
    #[cfg(not(loom))]
    pub(crate) fn new(
        os: &'a crate::sys::Waiter,
        sleepers: &'a std::sync::atomic::AtomicU32,
    ) -> Self {
        Waiter { os, sleepers }
    }

    /// Under loom there is no kernel: see [`ModelFutex`].
    #[cfg(loom)]
    pub(crate) fn model(model: &'a ModelFutex) -> Self {
        Waiter { model }
    }

    /// Sleeps while `word` holds `expected`, until woken, until `deadline`, or spuriously.
    ///
    /// Returns at once if `word` already differs. Callers re-check their condition in a loop.
    /// `word` must lie in the segment this waiter came from.
    #[inline]
    pub fn wait(&self, word: &AtomicU32, expected: u32, deadline: Option<Instant>) {
        #[cfg(not(loom))]
        crate::sys::OsWaiter::wait(self.os, self.sleepers, word, expected, deadline);
        #[cfg(loom)]
        {
            let _ = deadline;
            if self.model.deaths.load(SeqCst) != 0 {
                sync::yield_now();
                return;
            }
            let guard = self.model.lock.lock().unwrap();
            if word.load(SeqCst) == expected && self.model.deaths.load(SeqCst) == 0 {
                drop(self.model.sleepers.wait(guard));
            }
        }
    }

    /// Wakes every process sleeping on the lock word `lock` and, if given, on `also` (where
    /// one wake-up wakes every word, as on Windows, only once).
    #[inline]
    fn wake_all_and(&self, lock: &AtomicU32, also: Option<&AtomicU32>) {
        self.wake_all(lock);
        #[cfg(not(loom))]
        if let Some(word) = also.filter(|_| crate::sys::WAKES_BY_WORD) {
            self.wake_all(word);
        }
        #[cfg(loom)]
        let _ = also;
    }

    /// Wakes every process sleeping in [`wait`](Self::wait) on `word`.
    #[inline]
    pub fn wake_all(&self, word: &AtomicU32) {
        #[cfg(not(loom))]
        crate::sys::OsWaiter::wake_all(self.os, self.sleepers, word);
        #[cfg(loom)]
        {
            let _ = word;
            let _guard = self.model.lock.lock().unwrap();
            self.model.sleepers.notify_all();
        }
    }
}

/// What the segment hands to every [`RawRwLock`] call: its [`Waiter`], the calling handle's
/// token (from [`RawRwLock::attach`]), the recovery interval, and the OS's answer to "can
/// this holder still touch the lock" ([`hold`](Self::hold), [`liveness`](Self::liveness)).
#[derive(Clone, Copy)]
pub struct Context<'a> {
    waiter: Waiter<'a>,
    token: u32,
    recovery_interval: Duration,
    presence: &'a dyn Presence,
    /// The word waiters for the next write release sleep on ([`RawRwLock::wait_for_release`];
    /// the segment's write sequence), woken with the lock word by a release that finds
    /// `PARKED`.
    release_word: Option<&'a AtomicU32>,
}

impl<'a> Context<'a> {
    pub(crate) fn new(
        waiter: Waiter<'a>,
        token: u32,
        recovery_interval: Duration,
        presence: &'a dyn Presence,
    ) -> Self {
        Context {
            waiter,
            token,
            recovery_interval,
            presence,
            release_word: None,
        }
    }

    /// The same context, naming the word that waiters for the next write release sleep on
    /// (see [`RawRwLock::wait_for_release`]).
    #[inline]
    pub(crate) fn with_release_word(mut self, word: &'a AtomicU32) -> Self {
        self.release_word = Some(word);
        self
    }

    /// The segment's waiter.
    pub fn waiter(&self) -> Waiter<'a> {
        self.waiter
    }

    /// The calling handle's token, as returned by [`RawRwLock::attach`].
    pub fn token(&self) -> u32 {
        self.token
    }

    /// The longest a waiter may sleep before it checks whether the holders it waits for are
    /// alive.
    pub fn recovery_interval(&self) -> Duration {
        self.recovery_interval
    }

    /// Takes the calling handle's kernel lock on byte `byte` (below `4 * LOCK_AREA_WORDS`) of
    /// the lock area, so that [`liveness`](Self::liveness) can later tell other processes
    /// whether this handle can still touch the lock. Linux: an open-file-description lock
    /// (`fcntl(F_OFD_SETLK)`, a write lock on that one byte of the segment's file) on the
    /// handle's own descriptor; [`Hold::Unsupported`] elsewhere. A lock records the answer
    /// next to the holder's [`ProcessId`] and passes it back in a [`Holder`].
    #[doc(alias = "F_OFD_SETLK")]
    pub fn hold(&self, byte: u32) -> Hold {
        self.presence.hold(byte)
    }

    /// Releases what [`hold`](Self::hold) took on `byte` (closing the handle releases it too).
    pub fn release(&self, byte: u32) {
        self.presence.release(byte);
    }

    /// Whether `holder` can still touch the lock. With a held byte this is the kernel's
    /// answer (`fcntl(F_OFD_GETLK)`: locked by another open file description or not), the
    /// same in every PID namespace; without one, the process identity's (see the module
    /// docs). Never ask about a byte the calling handle holds itself: its own lock does not
    /// conflict with itself, so it would be reported dead.
    #[doc(alias = "F_OFD_GETLK")]
    pub fn liveness(&self, holder: Holder) -> Liveness {
        self.presence.liveness(holder)
    }
}

/// How a lock was acquired.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[must_use = "a poisoned acquisition must be reported, and the lock must be released"]
pub enum Acquired {
    /// The lock was free, or released by a live holder.
    Clean,
    /// The lock is poisoned: a writer died holding it, so the data may be half-written.
    Poisoned,
}

/// Why an acquisition did not take the lock.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NotAcquired {
    /// Taking it would have meant waiting (the `try_` calls), or the deadline passed.
    Unavailable,
    /// The calling handle's registration with the lock was taken back by a process that
    /// judged the handle gone (see the module docs, "Releasing only what is still yours"):
    /// the handle gets no more locks and must be opened again.
    Revoked,
}

/// A reader/writer lock whose whole state lives in a segment's [`LockArea`].
///
/// The segment calls these functions with its own lock area and a [`Context`]; an
/// implementation keeps no state outside the area, so every process that maps the segment
/// shares the lock. Acquisitions say why when the lock was not taken ([`NotAcquired`]: it
/// would block or the deadline passed, or the handle's registration was taken back) and
/// otherwise whether it was [poisoned](Acquired::Poisoned).
///
/// # Safety
///
/// [`Mmf`](crate::Mmf) hands out `&mut [u8]` to the data region while the exclusive lock is
/// held and `&[u8]` while a shared lock is held. An implementation must therefore guarantee,
/// across every thread of every process that uses the same area: while an exclusive lock is
/// held no other lock (shared or exclusive) is held by a live process; acquisition has Acquire
/// and release has Release semantics on the area; and `KIND` is unique to this lock's
/// protocol.
pub unsafe trait RawRwLock: 'static {
    /// Identifies the lock protocol; recorded in the header at creation and checked on open,
    /// so processes never disagree about how the area is used.
    const KIND: u32;

    /// Prepares a zeroed area. Runs once, in the creator, before the segment is published.
    fn init(area: &LockArea);

    /// Registers a new read-write handle of process `me`; the returned token is passed back
    /// in every [`Context`] of that handle. The default keeps no per-handle state.
    ///
    /// A lock that recovers from dead holders takes the handle's kernel lock here with
    /// [`Context::hold`] on a byte of its own (before anything the handle holds becomes
    /// visible to recoverers), records the answer, releases it in
    /// [`detach`](Self::detach) (after the handle's state is gone), and asks
    /// [`Context::liveness`] with a [`Holder`] naming that byte; see [`SharedRwLock`].
    fn attach(area: &LockArea, ctx: &Context<'_>, me: ProcessId) -> u32 {
        let _ = (area, ctx, me);
        0
    }

    /// Unregisters the handle of `ctx.token()`; it holds no lock any more.
    fn detach(area: &LockArea, ctx: &Context<'_>) {
        let _ = (area, ctx);
    }

    /// Takes a shared lock if that is possible without waiting.
    fn try_lock_shared(area: &LockArea, ctx: &Context<'_>) -> Result<Acquired, NotAcquired>;

    /// Takes a shared lock, waiting until `deadline` (forever if `None`).
    /// Returns [`NotAcquired::Unavailable`] if the deadline passed first.
    fn lock_shared(
        area: &LockArea,
        ctx: &Context<'_>,
        deadline: Option<Instant>,
    ) -> Result<Acquired, NotAcquired>;

    /// Releases a shared lock.
    ///
    /// # Safety
    /// May only be called by a holder of a shared lock taken on this area through the same
    /// handle, once per lock.
    unsafe fn unlock_shared(area: &LockArea, ctx: &Context<'_>);

    /// Takes the exclusive lock if that is possible without waiting.
    fn try_lock_exclusive(area: &LockArea, ctx: &Context<'_>) -> Result<Acquired, NotAcquired>;

    /// Takes the exclusive lock, waiting until `deadline` (forever if `None`).
    /// Returns [`NotAcquired::Unavailable`] if the deadline passed first.
    fn lock_exclusive(
        area: &LockArea,
        ctx: &Context<'_>,
        deadline: Option<Instant>,
    ) -> Result<Acquired, NotAcquired>;

    /// Releases the exclusive lock.
    ///
    /// # Safety
    /// May only be called by the holder of the exclusive lock taken on this area through the
    /// same handle, once.
    unsafe fn unlock_exclusive(area: &LockArea, ctx: &Context<'_>);

    /// Whether the exclusive lock is held by a holder that can no longer release it (by the
    /// same answer recovery uses), changing nothing: only loads and liveness questions, so a
    /// read-only handle, which cannot recover anything, can still stop waiting for a write
    /// that will never finish. `false` when it cannot tell. The default never can.
    fn writer_is_gone(area: &LockArea, ctx: &Context<'_>) -> bool {
        let _ = (area, ctx);
        false
    }

    /// Whether a writer died holding the lock and nobody has cleared that since. Only loads,
    /// so it works on a read-only mapping.
    fn is_poisoned(area: &LockArea) -> bool {
        let _ = area;
        false
    }

    /// Forgets that a writer died holding the lock.
    fn clear_poison(area: &LockArea) {
        let _ = area;
    }

    /// Sleeps while `word` holds `expected`, until the exclusive lock is next released,
    /// `deadline` passes, or spuriously. For [`Mmf::wait_for_write`](crate::Mmf::wait_for_write):
    /// `word` is the segment's write sequence, which a writer advances before it releases
    /// the lock, and which [`Context`] names to the lock as the word to wake; the caller
    /// loops.
    ///
    /// An implementation must not sleep through a release that changed `word` (a lost
    /// wake-up), and should cost writers nothing while nobody sleeps. Called only by
    /// read-write handles (a read-only one polls instead: it cannot announce itself on a
    /// read-only mapping). The default cannot tell when the lock is released: it sleeps one
    /// millisecond at most (a poll).
    fn wait_for_release(
        area: &LockArea,
        ctx: &Context<'_>,
        word: &AtomicU32,
        expected: u32,
        deadline: Option<Instant>,
    ) {
        let _ = (area, ctx);
        // Relaxed: a look; the caller re-reads the word with its own ordering.
        if word.load(Relaxed) == expected {
            let poll = Duration::from_millis(1);
            let left = deadline.map_or(poll, |d| d.saturating_duration_since(Instant::now()));
            std::thread::sleep(left.min(poll));
        }
    }
}
