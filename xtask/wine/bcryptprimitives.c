/*
 * A stand-in for Windows' bcryptprimitives.dll, for running Rust test binaries under wine 8.0.
 *
 * Rust's std (1.78 and later) gets its random bytes from ProcessPrng, which it imports from
 * bcryptprimitives.dll. Wine 8.0 ships no such DLL, so every Rust program fails to load with
 * STATUS_DLL_NOT_FOUND (0xc0000135), which the shell sees as exit code 53 (0x35, the low byte).
 * `cargo xtask setup` builds this file with mingw-w64 and copies it into the wine prefix's
 * system32, where wine's loader finds it as a native DLL. It is never shipped or used on Windows.
 *
 * ProcessPrng is documented at
 * https://learn.microsoft.com/en-us/windows/win32/seccng/processprng
 * We fill the buffer from RtlGenRandom (advapi32's SystemFunction036), which wine implements
 * on top of the host's random source.
 */
#include <windows.h>
#include <ntsecapi.h> /* RtlGenRandom, declared as SystemFunction036 */

BOOL WINAPI ProcessPrng(PBYTE pbData, SIZE_T cbData)
{
    /* RtlGenRandom takes a ULONG (32-bit) length, SIZE_T is 64-bit: fill in chunks. */
    const SIZE_T max_chunk = 0x40000000;

    while (cbData > 0) {
        ULONG chunk = (ULONG)(cbData < max_chunk ? cbData : max_chunk);
        /* Windows' ProcessPrng never fails, and std ignores its result; failing here is
         * still better reported than silently handing out unfilled bytes. */
        if (!RtlGenRandom(pbData, chunk))
            return FALSE;
        pbData += chunk;
        cbData -= chunk;
    }
    return TRUE;
}
