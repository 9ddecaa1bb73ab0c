//! Surviving a segment that another process shrinks under us.
//!
//! On Linux any process allowed to open a POSIX shm object read-write can `ftruncate` it
//! smaller. Pages past the new end vanish from every mapping, and the next touch of one
//! raises `SIGBUS`, whose default action kills the process. `mmf`'s own accesses are made
//! survivable with the kernel's own technique, an exception table:
//!
//! - **Copies** ([`copy`]) run through one hand-written routine (small moves, `rep movsb`, or
//!   an SSE2 loop, whichever is fast for the size and alignment) that lies between two known
//!   addresses and in which every instruction that touches memory is a load or store of the
//!   copy. A process-wide `SIGBUS` handler that finds the interrupted instruction pointer
//!   inside that range, and the faulting address inside a registered segment, moves the
//!   instruction pointer to a fixup label that returns a conservative count of the bytes not
//!   copied (never fewer than were missed). The caller turns that into [`Error::Truncated`].
//! - **Header words** (the lock word, the write sequence) are touched by ordinary atomics all
//!   over the lock code, so there is no single instruction to fix up. The header page only
//!   vanishes when the object was cut to zero bytes (a partly cut page stays mapped), so the
//!   whole segment is gone; the handler then maps a private zero page over that header (with `mmap(MAP_FIXED)`), marks
//!   the [`Registration`] as [`header_lost`](Registration::header_lost), and lets the
//!   interrupted atomic run again on the zero page. From then on every copy method of that
//!   handle fails with [`Error::Truncated`] without touching the lock: a private page would
//!   no longer exclude other processes.
//! - **Patchable mappings** (a frame channel's reader table, which every reader may write
//!   and so truncate) are handled like a header, but as a whole: a registration made with
//!   [`Registration::patchable`] has every page of its mapping replaced by private zero pages
//!   on a fault anywhere in it, at any instruction, and reports
//!   [`header_lost`](Registration::header_lost). Such memory is only accessed with atomics,
//!   and all-zero bytes must be a valid state of it; then plain atomics on it are safe
//!   however others truncate the object, at no cost until a fault happens.
//! - **Anything else** — a fault elsewhere in the program, a fault in the data region from a
//!   guard's slice, a hardware memory error (`BUS_MCEERR_*`), a `SIGBUS` sent with `kill` —
//!   goes to the handler that was installed before ours (Rust's own stack-overflow handler,
//!   or the application's), or, if there was none, to the default action, so genuine crashes
//!   still crash.
//!
//! Only `SIGBUS` is caught. Truncation never raises `SIGSEGV` (the mapping stays; its pages
//! lie past the end of the object), so a `SIGSEGV` is always a genuine bug and is left alone.
//!
//! # Async-signal-safety
//!
//! The handler reads its arguments and the registry below (atomics in static memory, with a
//! sequence number per slot so a torn read is detected) and compares addresses; for a lost
//! header it makes one `mmap` system call, which on Linux is a plain system call that takes no
//! user-space lock (POSIX does not list it as async-signal-safe; Linux's implementation is).
//! It never allocates, locks or formats. Registration (which may allocate a new chunk of
//! slots) happens outside signal context, when a segment is created or opened.
//!
//! # Where this applies
//!
//! The copy routine and its fixup: Linux on x86_64 and i686 ([`CATCHES_FAULTS`] is `true`).
//! Other Unix systems and other architectures fall back to a plain copy preceded by an `fstat`
//! size check in the caller: a shrink *before* the copy is reported as [`Error::Truncated`], one
//! that races with the copy still raises `SIGBUS`. The handler itself, with the header and
//! whole-mapping patches (which need no instruction pointer), runs on Linux on every
//! architecture; on aarch64 it is tested under qemu-user, which delivers the guest a
//! `SIGBUS` with `BUS_ADRERR` and the faulting address, and retries the access after the
//! handler's `mmap`. macOS and FreeBSD have no handler: a truncation there raises a fatal
//! `SIGBUS` on any access to the lost pages. On Windows a pagefile-backed section cannot be
//! shrunk at all, so the plain copy is exact there.
//!
//! [`Error::Truncated`]: crate::Error::Truncated

/// Whether [`copy`] survives a vanished page (Linux x86_64/i686). Where it does not, callers
/// check the object's size before copying.
pub(crate) const CATCHES_FAULTS: bool = cfg!(all(
    target_os = "linux",
    any(target_arch = "x86_64", target_arch = "x86"),
    not(miri)
));

/// A copy that found a page missing; `remaining` bytes (counted from the end) were not copied.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Fault {
    pub remaining: usize,
}

#[cfg(all(
    target_os = "linux",
    any(target_arch = "x86_64", target_arch = "x86"),
    not(miri)
))]
pub(crate) use linux::copy;

#[cfg(not(all(
    target_os = "linux",
    any(target_arch = "x86_64", target_arch = "x86"),
    not(miri)
)))]
pub(crate) use fallback::copy;

#[cfg(all(target_os = "linux", not(miri)))]
pub(crate) use linux::Registration;

#[cfg(not(all(target_os = "linux", not(miri))))]
pub(crate) use fallback::Registration;

/// The SIGBUS handler and its registry: every Linux architecture (patching lost pages needs no
/// instruction pointer); the copy routine and its fixup only on x86 (see the module docs).
#[cfg(all(target_os = "linux", not(miri)))]
mod linux {
    use std::ffi::c_int;
    use std::ffi::c_void;
    use std::ptr;
    use std::sync::atomic::Ordering::{AcqRel, Acquire, Relaxed, Release};
    use std::sync::atomic::{fence, AtomicBool, AtomicPtr, AtomicU32, AtomicUsize};
    use std::sync::Once;

    #[cfg(any(target_arch = "x86_64", target_arch = "x86"))]
    use super::Fault;
    use crate::sys::HEADER_LEN;

    /// A symbol name carrying the crate's major and minor version, so that two versions of mmf
    /// linked into one program do not clash.
    #[cfg(any(target_arch = "x86_64", target_arch = "x86"))]
    macro_rules! versioned {
        ($name:literal) => {
            concat!(
                $name,
                "_",
                env!("CARGO_PKG_VERSION_MAJOR"),
                "_",
                env!("CARGO_PKG_VERSION_MINOR")
            )
        };
    }

    // The copy routine, `fn(dst, src, len, vector_for_short) -> bytes not copied`. Any of its
    // memory instructions may fault: the handler accepts a fault at any address in
    // [`__mmf_fault_copy`, `__mmf_fault_copy_fixup`) and resumes at the fixup, which returns
    // `dst_end - dst`: the routine keeps the destination's end in r9 (set before the first
    // access) and advances the destination pointer only past bytes already stored, so the
    // count never claims a byte that was not copied and is at least 1 when a fault is
    // possible (len > 0). Strategies, chosen by what measured fastest (docs/benchmarks.md):
    // - up to 64 bytes: overlapping loads and stores from both ends, no loop;
    // - larger: `rep movsb` (what glibc's memcpy uses at these sizes on CPUs with ERMS/FSRM),
    //   after a 64-byte unaligned head so that it stores from a 64-byte boundary on, as glibc
    //   does, except at distances (dst - src) mod 4096 in 0..=63, where aligning was slower;
    //   but when that distance is within 63 of 0 either way and the caller says `rep movsb` is
    //   slow at such short distances on this CPU (`vector_for_short`, measured once per
    //   process by `short_distance_needs_vectors`), an SSE2 loop (the x86_64 baseline)
    //   with a 64-byte unaligned head, 128-byte iterations storing to 64-byte-aligned
    //   destinations (all loads of an iteration before its stores, so no load waits on a
    //   4K-aliased store of its own iteration), and a 64-byte tail loaded up front.
    // The direction flag is clear on entry, as both ABIs require. The symbols are hidden:
    // never exported from a shared object, never interposed.
    #[cfg(target_arch = "x86_64")]
    std::arch::global_asm!(
        ".pushsection .text.__mmf_fault_copy,\"ax\",@progbits",
        ".p2align 4",
        concat!(".globl ", versioned!("__mmf_fault_copy")),
        concat!(".hidden ", versioned!("__mmf_fault_copy")),
        concat!(".globl ", versioned!("__mmf_fault_copy_fixup")),
        concat!(".hidden ", versioned!("__mmf_fault_copy_fixup")),
        // rdi = dst, rsi = src, rdx = len, ecx = vector_for_short; returns rax.
        concat!(versioned!("__mmf_fault_copy"), ":"),
        "    lea r9, [rdi + rdx]",
        "    cmp rdx, 64",
        "    ja 50f",
        // ---- 0..=64 bytes: two (or four) possibly overlapping moves cover any length.
        "    cmp rdx, 16",
        "    jb 20f",
        "    movdqu xmm0, [rsi]",
        "    movdqu xmm1, [rsi + rdx - 16]",
        "    cmp rdx, 32",
        "    ja 10f",
        "    movdqu [rdi], xmm0",
        "    movdqu [rdi + rdx - 16], xmm1",
        "    xor eax, eax",
        "    ret",
        "10:",
        "    movdqu xmm2, [rsi + 16]",
        "    movdqu xmm3, [rsi + rdx - 32]",
        "    movdqu [rdi], xmm0",
        "    movdqu [rdi + 16], xmm2",
        "    movdqu [rdi + rdx - 32], xmm3",
        "    movdqu [rdi + rdx - 16], xmm1",
        "    xor eax, eax",
        "    ret",
        "20:",
        "    cmp edx, 8",
        "    jb 30f",
        "    mov rax, [rsi]",
        "    mov rcx, [rsi + rdx - 8]",
        "    mov [rdi], rax",
        "    mov [rdi + rdx - 8], rcx",
        "    xor eax, eax",
        "    ret",
        "30:",
        "    cmp edx, 4",
        "    jb 40f",
        "    mov eax, [rsi]",
        "    mov ecx, [rsi + rdx - 4]",
        "    mov [rdi], eax",
        "    mov [rdi + rdx - 4], ecx",
        "    xor eax, eax",
        "    ret",
        "40:",
        "    test edx, edx",
        "    jz 41f",
        "    movzx eax, byte ptr [rsi]",
        "    movzx ecx, byte ptr [rsi + rdx - 1]",
        "    mov r8, rdx",
        "    shr r8, 1",
        "    movzx r10d, byte ptr [rsi + r8]",
        "    mov [rdi], al",
        "    mov [rdi + r8], r10b",
        "    mov [rdi + rdx - 1], cl",
        "41:",
        "    xor eax, eax",
        "    ret",
        // ---- more than 64 bytes: d = (dst - src) mod 4096. Short distances (d in [-63, 63])
        // go to the vector loop if `rep movsb` is slow there on this CPU.
        "50:",
        "    mov rax, rdi",
        "    sub rax, rsi",
        "    and eax, 4095",
        "    cmp eax, 64",
        "    jb 55f",
        "    cmp eax, 4096 - 63",
        "    jb 60f",
        "    test ecx, ecx",
        "    jnz 70f",
        "    jmp 60f",
        // ---- d in [0, 63]: rep movsb as it is (aligning the destination made these slower).
        // On a fault rdi points at the first byte not stored.
        "55:",
        "    test ecx, ecx",
        "    jnz 70f",
        "    mov rcx, rdx",
        "    rep movsb",
        "    xor eax, eax",
        "    ret",
        // ---- rep movsb on a 64-byte-aligned destination (a 64-byte unaligned head first):
        // unaligned, it lost up to a fifth of memcpy's speed at 4 KiB when the destination
        // began in the last 256 bytes of a page, or at d in [-63, -1].
        "60:",
        "    movdqu xmm0, [rsi]",
        "    movdqu xmm1, [rsi + 16]",
        "    movdqu xmm2, [rsi + 32]",
        "    movdqu xmm3, [rsi + 48]",
        "    movdqu [rdi], xmm0",
        "    movdqu [rdi + 16], xmm1",
        "    movdqu [rdi + 32], xmm2",
        "    movdqu [rdi + 48], xmm3",
        "    mov eax, edi",
        "    and eax, 63",
        "    neg rax",
        "    add rax, 64",
        "    add rdi, rax",
        "    add rsi, rax",
        "    mov rcx, r9",
        "    sub rcx, rdi",
        "    rep movsb",
        "    xor eax, eax",
        "    ret",
        // ---- SSE2 loop. Tail (last 64 bytes) loaded first, stored last.
        "70:",
        "    movdqu xmm4, [rsi + rdx - 64]",
        "    movdqu xmm5, [rsi + rdx - 48]",
        "    movdqu xmm6, [rsi + rdx - 32]",
        "    movdqu xmm7, [rsi + rdx - 16]",
        "    movdqu xmm0, [rsi]",
        "    movdqu xmm1, [rsi + 16]",
        "    movdqu xmm2, [rsi + 32]",
        "    movdqu xmm3, [rsi + 48]",
        "    movdqu [rdi], xmm0",
        "    movdqu [rdi + 16], xmm1",
        "    movdqu [rdi + 32], xmm2",
        "    movdqu [rdi + 48], xmm3",
        // Advance by 64 - dst % 64 (1..=64, all stored by the head): dst is now aligned.
        "    mov eax, edi",
        "    and eax, 63",
        "    neg rax",
        "    add rax, 64",
        "    add rdi, rax",
        "    add rsi, rax",
        // rdx = where the tail starts; blocks at rdi < rdx end at most at r9.
        "    lea rdx, [r9 - 64]",
        "71:",
        "    lea rax, [rdi + 128]",
        "    cmp rax, rdx",
        "    ja 72f",
        "    movdqu xmm0, [rsi]",
        "    movdqu xmm1, [rsi + 16]",
        "    movdqu xmm2, [rsi + 32]",
        "    movdqu xmm3, [rsi + 48]",
        "    movdqu xmm8, [rsi + 64]",
        "    movdqu xmm9, [rsi + 80]",
        "    movdqu xmm10, [rsi + 96]",
        "    movdqu xmm11, [rsi + 112]",
        "    movdqa [rdi], xmm0",
        "    movdqa [rdi + 16], xmm1",
        "    movdqa [rdi + 32], xmm2",
        "    movdqa [rdi + 48], xmm3",
        "    movdqa [rdi + 64], xmm8",
        "    movdqa [rdi + 80], xmm9",
        "    movdqa [rdi + 96], xmm10",
        "    movdqa [rdi + 112], xmm11",
        "    sub rdi, -128",
        "    sub rsi, -128",
        "    jmp 71b",
        "72:",
        "    cmp rdi, rdx",
        "    jae 73f",
        "    movdqu xmm0, [rsi]",
        "    movdqu xmm1, [rsi + 16]",
        "    movdqu xmm2, [rsi + 32]",
        "    movdqu xmm3, [rsi + 48]",
        "    movdqa [rdi], xmm0",
        "    movdqa [rdi + 16], xmm1",
        "    movdqa [rdi + 32], xmm2",
        "    movdqa [rdi + 48], xmm3",
        "    add rdi, 64",
        "    add rsi, 64",
        "    jmp 72b",
        "73:",
        "    movdqu [r9 - 64], xmm4",
        "    movdqu [r9 - 48], xmm5",
        "    movdqu [r9 - 32], xmm6",
        "    movdqu [r9 - 16], xmm7",
        "    xor eax, eax",
        "    ret",
        // Not part of the fault range (it touches no memory): the bytes from the first one
        // not known stored to the end.
        concat!(versioned!("__mmf_fault_copy_fixup"), ":"),
        "    mov rax, r9",
        "    sub rax, rdi",
        "    ret",
        ".popsection",
    );

    // i686 (cdecl): arguments on the stack; esi and edi are callee-saved. `rep movsb` at every
    // distance and size (the fourth argument is ignored); its one memory instruction leaves
    // the count not copied in ecx, which the fixup returns.
    #[cfg(target_arch = "x86")]
    std::arch::global_asm!(
        ".pushsection .text.__mmf_fault_copy,\"ax\",@progbits",
        ".p2align 4",
        concat!(".globl ", versioned!("__mmf_fault_copy")),
        concat!(".hidden ", versioned!("__mmf_fault_copy")),
        concat!(".globl ", versioned!("__mmf_fault_copy_fixup")),
        concat!(".hidden ", versioned!("__mmf_fault_copy_fixup")),
        concat!(versioned!("__mmf_fault_copy"), ":"),
        "    push esi",
        "    push edi",
        "    mov edi, dword ptr [esp + 12]",
        "    mov esi, dword ptr [esp + 16]",
        "    mov ecx, dword ptr [esp + 20]",
        "    rep movsb",
        "    xor eax, eax",
        "    pop edi",
        "    pop esi",
        "    ret",
        concat!(versioned!("__mmf_fault_copy_fixup"), ":"),
        "    mov eax, ecx",
        "    pop edi",
        "    pop esi",
        "    ret",
        ".popsection",
    );

    #[cfg(any(target_arch = "x86_64", target_arch = "x86"))]
    extern "C" {
        #[link_name = versioned!("__mmf_fault_copy")]
        fn raw_copy(dst: *mut u8, src: *const u8, len: usize, vector_for_short: u32) -> usize;
        // A label after the routine's last memory instruction, never called: only its address
        // is used, as the end of the fault range and the place to resume.
        #[link_name = versioned!("__mmf_fault_copy_fixup")]
        fn copy_fixup();
    }

    /// Copies `len` bytes from `src` to `dst`, or reports the bytes left when a page of a
    /// registered segment vanished mid-copy.
    ///
    /// # Safety
    /// `src` must be valid for reads and `dst` for writes of `len` bytes, except that pages of
    /// a *registered* segment (see [`Registration`]) may have been truncated away; the two
    /// ranges must not overlap. Bytes of the segment may change concurrently (other
    /// processes): the copy reads and writes them only as raw bytes, never as typed values.
    #[cfg(any(target_arch = "x86_64", target_arch = "x86"))]
    #[inline]
    pub(crate) unsafe fn copy(dst: *mut u8, src: *const u8, len: usize) -> Result<(), Fault> {
        // SAFETY: passed on from the caller.
        unsafe { copy_with(dst, src, len, short_distance_needs_vectors()) }
    }

    /// [`copy`] with the short-distance strategy chosen by the caller (tests use both).
    ///
    /// # Safety
    /// As for [`copy`].
    #[cfg(any(target_arch = "x86_64", target_arch = "x86"))]
    #[inline]
    pub(super) unsafe fn copy_with(
        dst: *mut u8,
        src: *const u8,
        len: usize,
        vector_for_short: bool,
    ) -> Result<(), Fault> {
        // SAFETY: the caller provides valid, non-overlapping ranges; the routine follows the C
        // ABI, clobbers only caller-saved registers, and touches exactly dst/src..+len.
        let remaining = unsafe { raw_copy(dst, src, len, u32::from(vector_for_short)) };
        if remaining == 0 {
            Ok(())
        } else {
            Err(Fault { remaining })
        }
    }

    /// Whether `rep movsb` is slow on this CPU when (dst - src) mod 4096 is small, so that the
    /// copy routine should use its vector loop there. Some CPUs copy such pairs at a tenth of
    /// memcpy's speed (issue 12); others, like the one the benchmarks ran on, are fastest with
    /// `rep movsb` at every distance, where the SSE2 loop would lose up to half the speed
    /// (docs/benchmarks.md). Neither vendor nor feature bits tell them apart, so the first
    /// call (the first segment registered) times both on 16 KiB at distances +16 and -16,
    /// and the result is kept for the process. `rep movsb` must be more than twice as slow to be avoided: the effect is
    /// tenfold, and a noisy machine must not pick the loop where it loses.
    #[cfg(target_arch = "x86_64")]
    fn short_distance_needs_vectors() -> bool {
        const UNKNOWN: u8 = 0;
        const MOVSB: u8 = 1;
        const VECTORS: u8 = 2;
        static CHOICE: std::sync::atomic::AtomicU8 = std::sync::atomic::AtomicU8::new(UNKNOWN);
        // Relaxed: the value is a hint, computed the same by any thread; both are correct.
        match CHOICE.load(Relaxed) {
            MOVSB => false,
            VECTORS => true,
            _ => {
                let vectors = measure_short_distance();
                // Relaxed: as above.
                CHOICE.store(if vectors { VECTORS } else { MOVSB }, Relaxed);
                vectors
            }
        }
    }

    #[cfg(target_arch = "x86")]
    fn short_distance_needs_vectors() -> bool {
        false // the i686 routine has only `rep movsb`
    }

    #[cfg(target_arch = "x86_64")]
    #[cold]
    fn measure_short_distance() -> bool {
        const LEN: usize = 16 << 10;
        const PAGE: usize = 4096;
        let mut scratch = vec![1u8; 2 * LEN + 4 * PAGE];
        let base = scratch.as_mut_ptr();
        let page = base.align_offset(PAGE);
        let mut slowest = 0.0f64;
        for (dst_at, src_at) in [(16, 0), (0, 16)] {
            // Source and destination one page-rounded LEN apart plus the offsets: distance
            // +16 or -16 modulo 4096.
            // wrapping_add: plain address arithmetic, inside `scratch` (see the SAFETY below).
            let src = base.wrapping_add(page + src_at).cast_const();
            let dst = base.wrapping_add(page + LEN + PAGE + dst_at);
            let mut best = [f64::MAX; 2];
            for _ in 0..5 {
                for (vector, best) in [false, true].into_iter().zip(&mut best) {
                    let start = std::time::Instant::now();
                    for _ in 0..2 {
                        // SAFETY: both ranges lie inside `scratch` (page + 2 * PAGE + LEN +
                        // 16 <= 2 * LEN + 4 * PAGE) and do not overlap (LEN + PAGE apart).
                        let copied = unsafe { copy_with(dst, src, LEN, vector) };
                        debug_assert!(copied.is_ok(), "scratch memory cannot vanish");
                    }
                    *best = best.min(start.elapsed().as_secs_f64());
                }
            }
            slowest = slowest.max(best[0] / best[1]);
        }
        std::hint::black_box(&mut scratch);
        slowest > 2.0
    }

    // ---- registry of live segments, readable from the signal handler -----------------------

    pub(super) const SLOTS_PER_CHUNK: usize = 32;

    const HEADER_INTACT: u32 = 0;
    const HEADER_PATCHING: u32 = 1;
    const HEADER_PATCHED: u32 = 2;

    /// One registered mapping. `seq` is odd while `base`/`len` are being changed (a seqlock),
    /// so the handler never acts on a torn pair.
    pub(super) struct Slot {
        claimed: AtomicBool,
        seq: AtomicUsize,
        base: AtomicUsize,
        len: AtomicUsize,
        header: AtomicU32,
        /// The whole mapping may be patched (a companion object such as a reader table), not
        /// only its header page. Set before `set` publishes the range.
        whole: AtomicBool,
    }

    impl Slot {
        const fn new() -> Self {
            Slot {
                claimed: AtomicBool::new(false),
                seq: AtomicUsize::new(0),
                base: AtomicUsize::new(0),
                len: AtomicUsize::new(0),
                header: AtomicU32::new(HEADER_INTACT),
                whole: AtomicBool::new(false),
            }
        }

        /// `(base, len)` if the slot holds a stable registration.
        fn range(&self) -> Option<(usize, usize)> {
            // Acquire: pairs with the Release store that ends `set`, so base/len are the
            // values written before it.
            let before = self.seq.load(Acquire);
            if before % 2 == 1 {
                return None;
            }
            let base = self.base.load(Relaxed);
            let len = self.len.load(Relaxed);
            // Acquire fence: orders the two loads above before the re-check; pairs with the
            // Release fence in `set` that follows making `seq` odd.
            fence(Acquire);
            (self.seq.load(Relaxed) == before && len != 0).then_some((base, len))
        }

        fn set(&self, base: usize, len: usize) {
            self.seq.fetch_add(1, Relaxed);
            // Release fence: the odd `seq` is visible before the new values; pairs with the
            // Acquire fence in `range`.
            fence(Release);
            self.base.store(base, Relaxed);
            self.len.store(len, Relaxed);
            // Release: publishes base/len with the even value; pairs with the Acquire load
            // in `range`.
            self.seq.fetch_add(1, Release);
        }
    }

    /// Slots come in chunks linked into a list that only grows; chunks are never freed, so the
    /// handler can walk the list at any moment.
    struct Chunk {
        slots: [Slot; SLOTS_PER_CHUNK],
        next: AtomicPtr<Chunk>,
    }

    impl Chunk {
        const fn new() -> Self {
            Chunk {
                slots: [const { Slot::new() }; SLOTS_PER_CHUNK],
                next: AtomicPtr::new(ptr::null_mut()),
            }
        }
    }

    static FIRST_CHUNK: Chunk = Chunk::new();

    fn chunks() -> impl Iterator<Item = &'static Chunk> {
        std::iter::successors(Some(&FIRST_CHUNK), |chunk| {
            // Acquire: pairs with the AcqRel exchange that linked the chunk, so its slots are
            // seen initialised.
            let next = chunk.next.load(Acquire);
            // SAFETY: `next` is null or a leaked Box<Chunk> (see `claim_slot`): never freed, so
            // valid for 'static.
            unsafe { next.as_ref() }
        })
    }

    fn claim_slot() -> &'static Slot {
        let mut chunk: &'static Chunk = &FIRST_CHUNK;
        loop {
            for slot in &chunk.slots {
                // Acquire: pairs with the Release store in `Registration::drop`, so the
                // previous owner's writes to the slot are done.
                if slot
                    .claimed
                    .compare_exchange(false, true, Acquire, Relaxed)
                    .is_ok()
                {
                    return slot;
                }
            }
            // Acquire: as in `chunks`.
            let mut next = chunk.next.load(Acquire);
            if next.is_null() {
                let fresh = Box::into_raw(Box::new(Chunk::new()));
                // AcqRel: Release publishes the fresh chunk's initialised slots to walkers;
                // Acquire (on failure) makes the winner's chunk visible to us.
                match chunk
                    .next
                    .compare_exchange(ptr::null_mut(), fresh, AcqRel, Acquire)
                {
                    Ok(_) => next = fresh,
                    Err(winner) => {
                        // SAFETY: `fresh` came from Box::into_raw above and was never shared.
                        drop(unsafe { Box::from_raw(fresh) });
                        next = winner;
                    }
                }
            }
            // SAFETY: non-null chunk pointers are leaked Boxes, valid forever.
            chunk = unsafe { &*next };
        }
    }

    /// The registered slot whose mapping contains `addr`, with the mapping's base and length.
    pub(super) fn slot_containing(addr: usize) -> Option<(&'static Slot, usize, usize)> {
        for chunk in chunks() {
            for slot in &chunk.slots {
                if let Some((base, len)) = slot.range() {
                    if addr.wrapping_sub(base) < len {
                        return Some((slot, base, len));
                    }
                }
            }
        }
        None
    }

    /// Keeps a segment's mapping known to the `SIGBUS` handler while it is mapped.
    ///
    /// Must be dropped *before* the mapping is unmapped (declare it before the mapping in a
    /// struct), so the handler never acts on an address range that may be reused.
    pub(crate) struct Registration {
        slot: &'static Slot,
    }

    impl Registration {
        /// Registers the mapping `base..base + len` (at least [`HEADER_LEN`] bytes, page
        /// aligned) and installs the handler if this is the first segment of the process.
        pub(crate) fn new(base: *mut u8, len: usize) -> Self {
            Self::register(base, len, false)
        }

        /// Registers the mapping `base..base + len` (page aligned) as patchable as a whole: a
        /// truncation fault at any instruction, anywhere in it, maps private zero pages over
        /// all of it and the instruction runs again there (module docs). For memory that is
        /// only ever accessed with atomics and where all-zero bytes are a valid state.
        pub(crate) fn patchable(base: *mut u8, len: usize) -> Self {
            Self::register(base, len, true)
        }

        fn register(base: *mut u8, len: usize, whole: bool) -> Self {
            install_handler();
            // Choose the copy strategy now (once per process, tens of microseconds) rather
            // than in the middle of the first copy.
            #[cfg(any(target_arch = "x86_64", target_arch = "x86"))]
            short_distance_needs_vectors();
            let slot = claim_slot();
            // Relaxed: the slot is ours (claimed above); `set` publishes both with Release.
            slot.header.store(HEADER_INTACT, Relaxed);
            slot.whole.store(whole, Relaxed);
            slot.set(base as usize, len);
            Registration { slot }
        }

        /// Whether the header page vanished (the object was cut below [`HEADER_LEN`] bytes)
        /// and was replaced by a private zero page (for a [`patchable`](Self::patchable)
        /// registration: the whole mapping was): the lock of this handle no longer excludes
        /// other processes, so nothing may be read or written through it.
        #[inline]
        pub(crate) fn header_lost(&self) -> bool {
            // Relaxed: a stale `false` only lets one more copy run, which then faults on the
            // (equally vanished) data pages and reports the truncation itself.
            self.slot.header.load(Relaxed) != HEADER_INTACT
        }
    }

    impl Drop for Registration {
        fn drop(&mut self) {
            self.slot.set(0, 0);
            // Release: pairs with the Acquire claim in `claim_slot`.
            self.slot.claimed.store(false, Release);
        }
    }

    // ---- the handler --------------------------------------------------------------------------

    /// The disposition before ours, to chain to: a leaked `Box`, null until published. It is
    /// published *before* our handler is installed, so the handler never runs without it.
    static PREVIOUS: AtomicPtr<libc::sigaction> = AtomicPtr::new(ptr::null_mut());

    /// Makes `action` the disposition [`chain`] hands foreign signals to. Outside signal
    /// context only (it allocates); the box is leaked so that a handler running on another
    /// thread can keep reading the old one (at most two are published per process).
    fn publish_previous(action: libc::sigaction) {
        let leaked = Box::into_raw(Box::new(action));
        // Release: the handler's Acquire load in `chain` sees the whole value.
        PREVIOUS.store(leaked, Release);
    }

    /// Installs [`on_sigbus`], with no moment in which it could run without knowing the
    /// handler to chain to.
    ///
    /// A single `sigaction(SIGBUS, &ours, &mut old)` is atomic in the kernel but not for us:
    /// the kernel installs our handler and only then copies `old` out, and we can only publish
    /// it after the call returns. A SIGBUS in between — sent by `kill` to another thread, or
    /// raised by a fault there — would find nothing to chain to and take the default action,
    /// killing the process instead of reaching the application's handler. So the previous
    /// disposition is read and published first, with a query that changes nothing, and only
    /// then is ours installed. Any SIGBUS that reaches `on_sigbus` is delivered after the
    /// installing call changed the disposition, which comes after the publishing store in
    /// this thread's order; the kernel changes the disposition and picks it for a delivery
    /// under the same lock (`sighand->siglock` on Linux), which orders our store before any
    /// handler run that sees the new disposition, on any thread.
    ///
    /// What remains is another thread changing the disposition between our query and our
    /// install: the installing call then displaces that thread's handler, not the one we
    /// published, and we publish the displaced one instead. A SIGBUS in that short gap goes to
    /// the handler the other thread replaced — still an application's handler, never the
    /// default action by mistake. Two threads installing handlers for one signal at once are
    /// unordered anyway; no library can do better than pass on what it displaced.
    fn install_handler() {
        static INSTALL: Once = Once::new();
        INSTALL.call_once(|| {
            // SAFETY: `sigaction` is a plain C struct for which all-zero bytes are a valid
            // value (null handler, empty flags, `sa_restorer: None`).
            let mut action: libc::sigaction = unsafe { std::mem::zeroed() };
            action.sa_sigaction = on_sigbus
                as extern "C" fn(c_int, *mut libc::siginfo_t, *mut c_void)
                as libc::sighandler_t;
            // SA_ONSTACK: run on the thread's alternate stack if it has one, as Rust's own
            // SIGBUS/SIGSEGV handler expects when we chain to it. No SA_NODEFER: a second
            // SIGBUS inside the handler would be a bug, better fatal than recursive.
            action.sa_flags = libc::SA_SIGINFO | libc::SA_ONSTACK;
            // SAFETY: `sa_mask` is a valid sigset_t owned by `action`.
            unsafe { libc::sigemptyset(&mut action.sa_mask) };
            // SAFETY: as above, all-zero is a valid sigaction, overwritten by the call.
            let mut current: libc::sigaction = unsafe { std::mem::zeroed() };
            // SAFETY: a null new action only queries; `current` is a live sigaction value.
            let rc = unsafe { libc::sigaction(libc::SIGBUS, ptr::null(), &mut current) };
            // sigaction can only fail for an invalid signal or pointer, neither possible here;
            // without the handler, truncation stays fatal as it was.
            debug_assert_eq!(rc, 0, "sigaction(SIGBUS) query failed");
            if rc != 0 {
                return;
            }
            publish_previous(current);
            // SAFETY: as above.
            let mut displaced: libc::sigaction = unsafe { std::mem::zeroed() };
            // SAFETY: both pointers are to live sigaction values; the handler is an
            // `extern "C" fn` with the SA_SIGINFO signature.
            let rc = unsafe { libc::sigaction(libc::SIGBUS, &action, &mut displaced) };
            debug_assert_eq!(rc, 0, "sigaction(SIGBUS) failed");
            if rc == 0
                && (displaced.sa_sigaction != current.sa_sigaction
                    || displaced.sa_flags != current.sa_flags)
            {
                // Another thread installed a handler since our query (see above).
                publish_previous(displaced);
            }
        });
    }

    #[cfg(target_arch = "x86_64")]
    const REG_IP: usize = libc::REG_RIP as usize;
    #[cfg(target_arch = "x86")]
    const REG_IP: usize = 14; // REG_EIP in <sys/ucontext.h> (glibc and musl alike)

    extern "C" fn on_sigbus(sig: c_int, info: *mut libc::siginfo_t, context: *mut c_void) {
        // SAFETY: for an SA_SIGINFO handler the kernel passes a valid siginfo_t that lives
        // until we return.
        let siginfo = unsafe { &*info };
        if siginfo.si_code == libc::BUS_ADRERR {
            // SAFETY: BUS_ADRERR is a fault, for which si_addr is the member the kernel set.
            let addr = unsafe { siginfo.si_addr() } as usize;
            if let Some((slot, base, len)) = slot_containing(addr) {
                #[cfg(any(target_arch = "x86_64", target_arch = "x86"))]
                if in_copy_routine(context) {
                    return;
                }
                // Relaxed: `whole` was stored before `set` published the range, which
                // `slot_containing` read with Acquire.
                let patch_len = if slot.whole.load(Relaxed) {
                    len
                } else {
                    HEADER_LEN
                };
                if addr - base < patch_len && patch(slot, base, patch_len) {
                    return; // the access runs again, on private zero pages
                }
            }
        }
        chain(sig, info, context);
    }

    /// If the fault interrupted the copy routine (any instruction from its start up to its
    /// fixup: each is a load or store of the copy, or touches no memory), resumes at the
    /// fixup, which returns the bytes not copied, and returns true.
    #[cfg(any(target_arch = "x86_64", target_arch = "x86"))]
    fn in_copy_routine(context: *mut c_void) -> bool {
        let ucontext = context.cast::<libc::ucontext_t>();
        // SAFETY: for an SA_SIGINFO handler `context` points to the interrupted thread's
        // ucontext_t, which we may read and modify until we return.
        let ip = unsafe { (*ucontext).uc_mcontext.gregs[REG_IP] } as usize;
        let start = raw_copy as unsafe extern "C" fn(*mut u8, *const u8, usize, u32) -> usize;
        let fixup = copy_fixup as unsafe extern "C" fn() as usize;
        if ip < start as usize || ip >= fixup {
            return false;
        }
        // The fault was on a registered segment, so it came from one of the copy's own loads
        // or stores, never from a stack access (x86_64 never moves the stack, i686 has pushed
        // esi and edi by then).
        // SAFETY: as above; at each such instruction the stack is as the fixup expects and
        // the registers it reads (r9 and rdi, or ecx) hold its count.
        unsafe { (*ucontext).uc_mcontext.gregs[REG_IP] = fixup as _ };
        true
    }

    /// Maps private zero pages over `base..base + len` (a vanished header page, or a whole
    /// patchable mapping). Returns whether the faulting instruction may be retried.
    fn patch(slot: &Slot, base: usize, len: usize) -> bool {
        // Acquire/Relaxed: the claim orders nothing else; the Release store below publishes
        // the finished patch to threads that fault on the same page.
        match slot
            .header
            .compare_exchange(HEADER_INTACT, HEADER_PATCHING, Acquire, Relaxed)
        {
            Ok(_) => {}
            // Another thread is patching: retry; we fault again until it is done.
            Err(HEADER_PATCHING) => return true,
            // Patched already, yet a fault: not the truncation we know how to handle.
            Err(_) => return false,
        }
        // base..base+len lies in a mapping we own and keep registered until it is unmapped
        // (len is HEADER_LEN or the registered length); mmap is a plain system call (module
        // docs, signal safety).
        // SAFETY: anonymous memory there invalidates no Rust object: the header and
        // patchable mappings are atomics, valid for any bytes.
        let mapped = unsafe {
            libc::mmap(
                base as *mut c_void,
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_FIXED,
                -1,
                0,
            )
        };
        if mapped == libc::MAP_FAILED {
            // Release: pairs with the Acquire claim above in another thread.
            slot.header.store(HEADER_INTACT, Release);
            return false;
        }
        // Release: pairs with the loads in `header_lost` and the claim above.
        slot.header.store(HEADER_PATCHED, Release);
        true
    }

    /// Hands a signal we do not handle to whoever handled it before us.
    fn chain(sig: c_int, info: *mut libc::siginfo_t, context: *mut c_void) {
        // Acquire: pairs with the Release store in `publish_previous`.
        let previous = PREVIOUS.load(Acquire);
        // SAFETY: non-null values are leaked Boxes (publish_previous), valid forever and
        // never written after publication.
        let Some(previous) = (unsafe { previous.as_ref() }) else {
            // Unreachable: installing publishes first (install_handler). Defensive only.
            return default_action(sig, info);
        };
        let handler = previous.sa_sigaction;
        if handler == libc::SIG_DFL {
            default_action(sig, info);
        } else if handler == libc::SIG_IGN {
            // A fault cannot be ignored (the kernel would deliver it again forever); a
            // SIGBUS sent by `kill` can.
            // SAFETY: valid siginfo_t, as in on_sigbus.
            if unsafe { (*info).si_code } > 0 {
                default_action(sig, info);
            }
        } else if previous.sa_flags & libc::SA_SIGINFO != 0 {
            let f: extern "C" fn(c_int, *mut libc::siginfo_t, *mut c_void) =
                // SAFETY: the previous handler was installed with SA_SIGINFO, so this is its
                // signature; we pass it exactly what the kernel passed us.
                unsafe { std::mem::transmute(handler) };
            f(sig, info, context);
        } else {
            // SAFETY: without SA_SIGINFO the handler takes the signal number only.
            let f: extern "C" fn(c_int) = unsafe { std::mem::transmute(handler) };
            f(sig);
        }
    }

    /// Restores the default action so the signal kills the process as if we were not here: a
    /// fault re-executes the instruction on return; a sent signal is raised again (it stays
    /// pending until the handler returns, as SIGBUS is blocked while it runs).
    fn default_action(sig: c_int, info: *mut libc::siginfo_t) {
        // SAFETY: all-zero is a valid sigaction; SIG_DFL is 0.
        let mut action: libc::sigaction = unsafe { std::mem::zeroed() };
        action.sa_sigaction = libc::SIG_DFL;
        // SAFETY: a live sigaction value; signal() and sigaction() are async-signal-safe.
        unsafe { libc::sigaction(sig, &action, ptr::null_mut()) };
        // SAFETY: valid siginfo_t, as in on_sigbus.
        if unsafe { (*info).si_code } <= 0 {
            // SAFETY: raise is async-signal-safe.
            unsafe { libc::raise(sig) };
        }
    }
}

#[cfg(not(all(
    target_os = "linux",
    any(target_arch = "x86_64", target_arch = "x86"),
    not(miri)
)))]
mod fallback {
    use super::Fault;

    /// A plain copy: this platform has no fault-catching routine (see the module docs).
    ///
    /// # Safety
    /// `src` valid for reads and `dst` for writes of `len` bytes, not overlapping.
    pub(crate) unsafe fn copy(dst: *mut u8, src: *const u8, len: usize) -> Result<(), Fault> {
        // SAFETY: guaranteed by the caller.
        unsafe { std::ptr::copy_nonoverlapping(src, dst, len) };
        Ok(())
    }

    /// Nothing to register where there is no SIGBUS handler (not Linux).
    #[cfg(not(all(target_os = "linux", not(miri))))]
    pub(crate) struct Registration;

    #[cfg(not(all(target_os = "linux", not(miri))))]
    impl Registration {
        pub(crate) fn new(_base: *mut u8, _len: usize) -> Self {
            Registration
        }

        pub(crate) fn patchable(_base: *mut u8, _len: usize) -> Self {
            Registration
        }

        #[inline]
        pub(crate) fn header_lost(&self) -> bool {
            false
        }
    }
}

#[cfg(all(test, not(miri)))]
mod tests {
    use super::*;
    #[cfg(all(target_os = "linux", any(target_arch = "x86_64", target_arch = "x86")))]
    use linux::copy_with;

    #[cfg(target_os = "linux")]
    #[test]
    fn registry_grows_past_one_chunk_finds_every_range_and_forgets_dropped_ones() {
        // Fake ranges below mmap_min_addr (64 KiB), where nothing real is ever mapped, so a
        // segment registered by a test running in parallel cannot overlap them. The registry
        // only compares addresses; nothing faults here.
        let base = |i: usize| 0x100 + i * 0x100;
        let count = 3 * linux::SLOTS_PER_CHUNK;
        let registrations: Vec<_> = (0..count)
            .map(|i| Registration::new(base(i) as *mut u8, 0x100))
            .collect();
        for (i, registration) in registrations.iter().enumerate() {
            let (_, found, len) = linux::slot_containing(base(i) + 0xff).expect("registered");
            assert_eq!((found, len), (base(i), 0x100));
            assert!(
                !matches!(linux::slot_containing(base(i) - 1), Some((_, b, _)) if b == base(i))
            );
            assert!(!registration.header_lost());
        }
        drop(registrations);
        for i in 0..count {
            assert!(linux::slot_containing(base(i)).is_none());
        }
    }

    /// A companion object's mapping (`MmfOptions::companion`) is patchable as a whole: after
    /// another process cuts the object to nothing, a plain atomic load anywhere in it, past
    /// the first page included, reads zero instead of raising a fatal SIGBUS, and the handle
    /// reports the loss; writes land on the private page and stay readable. Every Linux
    /// architecture (aarch64 runs it under qemu-user, which delivers the SIGBUS too).
    #[cfg(target_os = "linux")]
    #[test]
    fn a_truncated_patchable_mapping_reads_zeros_and_reports_the_loss() {
        use std::sync::atomic::{AtomicU32, Ordering::Relaxed};
        let name = format!("mmfu-patch-{}+readers", std::process::id());
        let table = crate::MmfOptions::new(&name)
            .companion()
            .create(3 * 4096)
            .unwrap();
        let word = |offset: usize| {
            assert!(offset + 4 <= table.len() && offset % 4 == 0);
            // wrapping_add: computing the address needs no unsafe; offset + 4 <= len keeps it
            // inside the data region.
            let at = table.data_ptr().wrapping_add(offset).cast::<AtomicU32>();
            // SAFETY: 4-aligned and inside the mapping `table` keeps alive (asserted above);
            // the region holds only plain bytes, valid as an AtomicU32.
            unsafe { &*at }
        };
        let far = 2 * 4096 + 8; // past the header page and the first data page
        word(far).store(7, Relaxed);
        assert!(!table.mapping_lost());
        let file = std::fs::OpenOptions::new()
            .write(true)
            .open(format!("/dev/shm/{name}"))
            .unwrap();
        file.set_len(0).unwrap();
        assert_eq!(word(far).load(Relaxed), 0, "the lost page reads as zero");
        assert!(table.mapping_lost(), "the loss is reported");
        word(far).store(9, Relaxed);
        assert_eq!(word(far).load(Relaxed), 9, "the private page is writable");
        assert_eq!(word(0).load(Relaxed), 0, "the whole mapping was replaced");
    }

    /// Both short-distance strategies (`rep movsb` and the SSE2 loop), every length through
    /// the small path and the loop's head, body and tail, at distances (dst - src) mod 4096
    /// that are short (the loop's case) and long: exact bytes, nothing written around them.
    #[cfg(all(target_os = "linux", any(target_arch = "x86_64", target_arch = "x86")))]
    #[test]
    fn copy_copies_every_length_distance_and_strategy() {
        const PAGE: usize = 4096;
        let lengths = (0..=300).chain([383, 384, 385, 1000, 4000, 4096, 4097, 10_000]);
        let lengths: Vec<usize> = lengths.collect();
        let max = 10_000;
        let src_buf: Vec<u8> = (0..max + 2 * PAGE).map(|i| (i * 13 + 5) as u8).collect();
        let src_page = src_buf.as_ptr().align_offset(PAGE);
        let mut dst_buf = vec![0u8; max + 3 * PAGE];
        let dst_page = dst_buf.as_ptr().align_offset(PAGE);
        for vector in [false, true] {
            for src_at in [0, 16, 63] {
                for dst_at in [0, 1, 15, 16, 17, 63, 64, 100, 2048, 4033, 4095] {
                    for &len in &lengths {
                        let src = &src_buf[src_page + src_at..][..len];
                        let at = dst_page + PAGE + dst_at;
                        dst_buf.fill(0);
                        let dst = dst_buf[at..].as_mut_ptr();
                        // SAFETY: both ranges lie in live, distinct local buffers.
                        let result = unsafe { copy_with(dst, src.as_ptr(), len, vector) };
                        let case = (vector, src_at, dst_at, len);
                        assert_eq!(result, Ok(()), "{case:?}");
                        assert_eq!(&dst_buf[at..at + len], src, "{case:?}");
                        assert!(dst_buf[..at].iter().all(|&b| b == 0), "{case:?}");
                        assert!(dst_buf[at + len..].iter().all(|&b| b == 0), "{case:?}");
                    }
                }
            }
        }
    }

    /// A fault in each path of the copy routine is caught and reported, and every byte the
    /// report counts as copied is right. The segment is cut (in this process: a fault the
    /// routine fails to catch kills the test binary, which fails the run) so that data pages
    /// 4.. vanish, then copies cross the cut in both directions: into the segment (the
    /// stores fault) with the cut in the small path, in the SSE2 loop's head, body and tail
    /// and in `rep movsb`; out of it (the loads fault: the loop loads its tail first).
    #[cfg(all(target_os = "linux", any(target_arch = "x86_64", target_arch = "x86")))]
    #[test]
    fn a_fault_in_every_path_of_the_copy_is_caught_and_counted_conservatively() {
        const PAGE: usize = 4096;
        let cut = 4 * PAGE;
        let name = format!("mmfu-cut-{}", std::process::id());
        let segment = crate::MmfOptions::new(&name).create(8 * PAGE).unwrap();
        let data = segment.data_ptr();
        let heap: Vec<u8> = (0..6 * PAGE).map(|i| (i * 29 + 7) as u8).collect();
        let heap_page = heap.as_ptr().align_offset(PAGE);
        std::fs::OpenOptions::new()
            .write(true)
            .open(format!("/dev/shm/{name}"))
            .and_then(|file| file.set_len((crate::sys::HEADER_LEN + cut) as u64))
            .unwrap();
        let mut cases = 0;
        // (bytes before the cut, bytes after it): small path; loop head (before < 64);
        // body; tail (the copy ends 32 bytes past a page-aligned cut, so the aligned body
        // ends exactly at the cut and only the tail's stores cross it); long copies.
        let spans = [
            (1, 1),
            (10, 30),
            (40, 24),
            (63, 1),
            (1, 200),
            (40, 4000),
            (1000, 1000),
            (3000, 5),
            (4064, 32),
            (PAGE - 32, 32),
            (2 * PAGE, PAGE),
        ];
        for vector in [false, true] {
            // Heap offsets within a page: a short distance to the page-aligned cut (the loop's
            // case when `vector`), and a long one (`rep movsb` always).
            for distance in [16, 1000] {
                for (before, after) in spans {
                    let len = before + after;
                    let seg_at = cut - before;
                    // Where the heap side starts within its page: `distance` bytes after the
                    // segment side's page offset (-before).
                    let heap_off = (distance + PAGE - before % PAGE) % PAGE;
                    let case = (vector, distance, before, after);
                    // Into the segment (distance -16 or -1000: dst - src).
                    let src = &heap[heap_page + heap_off..][..len];
                    // SAFETY: `seg_at..seg_at + len` lies in the registered mapping, whose
                    // pages past the cut vanished (that is what is tested); `src` is live.
                    let dst = unsafe { data.add(seg_at) };
                    // SAFETY: as above; the ranges do not overlap (heap and mapping).
                    let result = unsafe { copy_with(dst, src.as_ptr(), len, vector) };
                    let Err(Fault { remaining }) = result else {
                        panic!("{case:?}: copy into the cut segment returned {result:?}");
                    };
                    assert!((after..=len).contains(&remaining), "{case:?}: {remaining}");
                    let copied = len - remaining;
                    // SAFETY: `copied <= before` bytes from `dst` lie before the cut, mapped.
                    let written = unsafe { std::slice::from_raw_parts(dst, copied) };
                    assert_eq!(written, &src[..copied], "{case:?}");
                    // Out of the segment (distance +16 or +1000). Its bytes before the cut
                    // are what they are (a store across the cut may have written none of
                    // its bytes): compare with them.
                    let mut out = vec![0u8; len + 2 * PAGE];
                    let at = out.as_ptr().align_offset(PAGE) + heap_off;
                    let result =
                        // SAFETY: as above, the source crosses the cut; `out` is a live local.
                        unsafe { copy_with(out[at..].as_mut_ptr(), dst.cast_const(), len, vector) };
                    let Err(Fault { remaining }) = result else {
                        panic!("{case:?}: copy out of the cut segment returned {result:?}");
                    };
                    assert!((after..=len).contains(&remaining), "{case:?}: {remaining}");
                    let copied = len - remaining;
                    // SAFETY: as above, `copied <= before` bytes lie before the cut.
                    let kept = unsafe { std::slice::from_raw_parts(dst, copied) };
                    assert_eq!(&out[at..at + copied], kept, "{case:?}");
                    cases += 2;
                }
            }
        }
        assert_eq!(cases, 2 * 2 * 2 * spans.len());
    }

    #[test]
    fn copy_copies_every_length_and_alignment() {
        let src: Vec<u8> = (0..4096u32).map(|i| (i * 7 + 3) as u8).collect();
        for len in [0, 1, 7, 8, 63, 64, 65, 1000, 4000] {
            for offset in [0, 1, 3, 8] {
                let mut dst = vec![0u8; len + 16];
                let target = dst[offset..].as_mut_ptr();
                // SAFETY: both buffers are live locals of sufficient length and distinct.
                let result = unsafe { copy(target, src.as_ptr(), len) };
                assert_eq!(result, Ok(()));
                assert_eq!(&dst[offset..offset + len], &src[..len]);
                assert!(dst[..offset].iter().all(|&b| b == 0));
                assert!(dst[offset + len..].iter().all(|&b| b == 0));
            }
        }
    }
}
