//! The loom model's world below the lock: a futex made of a loom mutex and condition
//! variable, which [`Waiter`](super::Waiter) sleeps on under loom (there is no kernel). Built
//! only under loom (`RUSTFLAGS="--cfg loom"`); the models themselves are in `loom_tests.rs`.

use crate::sync::AtomicU32;
use crate::sync::Ordering::SeqCst;

/// Under loom: a futex modelled with a loom mutex and condition variable, so that a sleeper
/// really blocks and loom can report a lost wake-up as a deadlock. Timed-out sleeps (which is
/// how waiters notice dead holders) are modelled by a death waking every sleeper and turning
/// later sleeps into yields.
pub(crate) struct ModelFutex {
    pub(super) lock: loom::sync::Mutex<()>,
    pub(super) sleepers: loom::sync::Condvar,
    pub(super) deaths: AtomicU32,
}

impl ModelFutex {
    pub(crate) fn new() -> Self {
        ModelFutex {
            lock: loom::sync::Mutex::new(()),
            sleepers: loom::sync::Condvar::new(),
            deaths: AtomicU32::new(0),
        }
    }

    /// A process died: from now on sleeps time out (see above).
    pub(crate) fn death(&self) {
        self.deaths.fetch_add(1, SeqCst);
        let _guard = self.lock.lock().unwrap();
        self.sleepers.notify_all();
    }
}
