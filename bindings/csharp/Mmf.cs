// mmf from C#: named shared memory segments and frame channels, over the C ABI of
// crates/mmf-ffi (include/mmf.h). One file, no dependencies: add it to a project and put the
// native library where the runtime looks for it (libmmf_ffi.so on Linux, found through
// LD_LIBRARY_PATH or next to the program; mmf_ffi.dll on Windows, next to the program).
//
// Written for the C# that Debian's mono-mcs accepts (C# 7.2: Span<T>, no nullable reference
// types, no nint/nuint, no function pointers) so that the same file builds with mcs on mono and
// with the .NET SDK on Windows. Only mono on x86_64 Linux is tested (bindings/csharp/tests).
//
// Ownership follows mmf.h: every native handle lives in a SafeHandle subclass whose release is
// the matching mmf_*_close, so a handle is closed exactly once, by Dispose or by the finalizer,
// and never while a P/Invoke call is using it (the marshaller holds a reference for the call).
// A Frame's bytes stay in shared memory and are valid until the Frame is disposed, the reader
// takes its next frame, or the reader is closed; after that any access to the Frame throws
// ObjectDisposedException instead of reading memory the writer may be reusing. The same rule
// holds for the other views into shared memory: a WriteLock's or ReadLock's Data until the
// lock is disposed, a PendingFrame's Data and UserHeader until Commit or Dispose (which
// abandons the frame), each checked by the owner (Segment, FrameWriter) that knows which one
// the C handle holds. A Span taken before that cannot be checked: use it inside the using block.
//
// mcs (C# 7.2 as mono ships it) cannot assign through the indexer of a Span returned by a
// property (`pending.Data[0] = 1` is error CS1612): take the Span into a local first.
//
// Like the C handles, Segment, FrameWriter and FrameReader objects are not thread-safe: use
// each from one thread at a time (open one per thread instead; the shared memory itself is
// safe to share between threads and processes).

using System;
using System.Diagnostics;
using System.Runtime.InteropServices;
using System.Text;
using System.Threading;

namespace Mmf
{
    /// <summary>The status codes of mmf.h (MMF_OK, MMF_ERR_*).</summary>
    public enum MmfStatus
    {
        Ok = 0,
        InvalidArgument = -1,
        NotFound = -2,
        AlreadyExists = -3,
        Timeout = -4,
        WouldBlock = -5,
        Poisoned = -6,
        WriterGone = -7,
        TooLarge = -8,
        Other = -9,
        Panic = -10,
    }

    /// <summary>A failed mmf call: its status code and the library's message for it.</summary>
    public class MmfException : Exception
    {
        public MmfStatus Status { get; private set; }

        public MmfException(MmfStatus status, string message)
            : base(message.Length == 0 ? status.ToString() : status + ": " + message)
        {
            Status = status;
        }
    }

    /// <summary>Pixel format codes (FourCC, little-endian) as the Rust side publishes them.</summary>
    public static class PixelFormats
    {
        /// <summary>rgb24, FourCC "RGB3": 3 bytes per pixel, R, G, B.</summary>
        public const uint Rgb24 = 'R' | ('G' << 8) | ('B' << 16) | ('3' << 24);
    }

    /// <summary>An open segment handle; releasing it is mmf_segment_close.</summary>
    public sealed class SegmentHandle : SafeHandle
    {
        public SegmentHandle() : base(IntPtr.Zero, true) { }
        public override bool IsInvalid { get { return handle == IntPtr.Zero; } }
        protected override bool ReleaseHandle() { return Native.mmf_segment_close(handle) == 0; }
    }

    /// <summary>A frame writer handle; releasing it is mmf_frame_writer_close.</summary>
    public sealed class FrameWriterHandle : SafeHandle
    {
        public FrameWriterHandle() : base(IntPtr.Zero, true) { }
        public override bool IsInvalid { get { return handle == IntPtr.Zero; } }
        protected override bool ReleaseHandle() { return Native.mmf_frame_writer_close(handle) == 0; }
    }

    /// <summary>A frame reader handle; releasing it is mmf_frame_reader_close.</summary>
    public sealed class FrameReaderHandle : SafeHandle
    {
        public FrameReaderHandle() : base(IntPtr.Zero, true) { }
        public override bool IsInvalid { get { return handle == IntPtr.Zero; } }
        protected override bool ReleaseHandle() { return Native.mmf_frame_reader_close(handle) == 0; }
    }

    /// <summary>MmfFrame of mmf.h, field for field. mmf.h orders the fields so that none
    /// needs padding whether uint64_t is 4- or 8-aligned, so sequential layout matches C on
    /// 32- and 64-bit targets alike (72 bytes on 64-bit, 56 on 32-bit; checked when the
    /// library is first used, see Native.CheckAbi).</summary>
    [StructLayout(LayoutKind.Sequential)]
    internal struct NativeFrame
    {
        public ulong Seq;
        public ulong TimestampNs;
        public ulong Tag;
        public IntPtr Data;
        public UIntPtr Len;
        public IntPtr UserHeader;
        public UIntPtr UserHeaderLen;
        public uint Width;
        public uint Height;
        public uint PixelFormat;
        public uint Reserved;
    }

    /// <summary>MmfFrameSpec of mmf.h, field for field: four size_t and a uint32_t, laid out
    /// (and padded at the end on 64-bit targets) as C does, 40 bytes on 64-bit and 20 on
    /// 32-bit (checked with NativeFrame's size, see Native).</summary>
    [StructLayout(LayoutKind.Sequential)]
    internal struct NativeFrameSpec
    {
        public UIntPtr MaxFrameLen;
        public UIntPtr MaxReaders;
        public UIntPtr Slots;
        public UIntPtr UserHeaderLen;
        public uint Mode;
    }

    /// <summary>The P/Invoke declarations, one per function of mmf.h. Names are passed as
    /// NUL-terminated UTF-8 bytes (see Native.Name) rather than as string, because the
    /// marshaller's "ANSI" means UTF-8 on Unix but the code page on Windows; size_t is
    /// UIntPtr and bool* is a byte.</summary>
    internal static class Native
    {
        private const string Lib = "mmf_ffi";

        [DllImport(Lib)] internal static extern IntPtr mmf_last_error_message();
        [DllImport(Lib)] internal static extern uint mmf_abi_version();

        /// <summary>MMF_ABI_VERSION of the mmf.h this file was written against.</summary>
        internal const uint AbiVersion = 1;

        /// <summary>Runs before the first call into the library: a library of another ABI
        /// version, or a struct laid out otherwise than C lays it out, would be misread
        /// silently, so either stops the program here (as a TypeInitializationException whose
        /// inner exception says which).</summary>
        static Native()
        {
            uint version = mmf_abi_version();
            if (version != AbiVersion)
                throw new InvalidOperationException(string.Format(
                    "the loaded mmf_ffi library has ABI version {0}, but this binding was written for version {1}: use the library and the binding of the same mmf release",
                    version, AbiVersion));
            int size = Marshal.SizeOf(typeof(NativeFrame));
            int want = 24 + 4 * IntPtr.Size + 16;
            if (size != want)
                throw new InvalidOperationException(string.Format(
                    "NativeFrame is {0} bytes but MmfFrame is {1} on this platform", size, want));
            size = Marshal.SizeOf(typeof(NativeFrameSpec));
            want = 5 * IntPtr.Size; // 4 size_t, a uint32_t, padded to a size_t multiple
            if (size != want)
                throw new InvalidOperationException(string.Format(
                    "NativeFrameSpec is {0} bytes but MmfFrameSpec is {1} on this platform", size, want));
        }

        [DllImport(Lib)] internal static extern int mmf_segment_create(byte[] name, UIntPtr size, out SegmentHandle seg);
        [DllImport(Lib)] internal static extern int mmf_segment_open(byte[] name, out SegmentHandle seg);
        [DllImport(Lib)] internal static extern int mmf_segment_open_read_only(byte[] name, out SegmentHandle seg);
        [DllImport(Lib)] internal static extern int mmf_segment_remove(byte[] name);
        [DllImport(Lib)] internal static extern int mmf_segment_close(IntPtr seg);
        [DllImport(Lib)] internal static extern int mmf_segment_len(SegmentHandle seg, out UIntPtr len);
        [DllImport(Lib)] internal static extern unsafe int mmf_segment_read_at(SegmentHandle seg, UIntPtr offset, byte* buf, UIntPtr len);
        [DllImport(Lib)] internal static extern unsafe int mmf_segment_write_at(SegmentHandle seg, UIntPtr offset, byte* data, UIntPtr len);
        [DllImport(Lib)] internal static extern int mmf_segment_write_seq(SegmentHandle seg, out uint seq);
        [DllImport(Lib)] internal static extern int mmf_segment_wait_for_write(SegmentHandle seg, uint seen, uint timeoutMs, out uint seq);
        [DllImport(Lib)] internal static extern int mmf_segment_is_poisoned(SegmentHandle seg, out byte poisoned);
        [DllImport(Lib)] internal static extern int mmf_segment_clear_poison(SegmentHandle seg);
        [DllImport(Lib)] internal static extern int mmf_segment_lock_write(SegmentHandle seg, uint timeoutMs, out IntPtr data, out UIntPtr len);
        [DllImport(Lib)] internal static extern int mmf_segment_unlock_write(SegmentHandle seg);
        [DllImport(Lib)] internal static extern int mmf_segment_lock_read(SegmentHandle seg, uint timeoutMs, out IntPtr data, out UIntPtr len);
        [DllImport(Lib)] internal static extern int mmf_segment_unlock_read(SegmentHandle seg);

        [DllImport(Lib)] internal static extern int mmf_frame_writer_create(byte[] name, UIntPtr maxFrameLen, UIntPtr maxReaders, out FrameWriterHandle w);
        [DllImport(Lib)] internal static extern int mmf_frame_writer_set_meta(FrameWriterHandle w, uint width, uint height, uint pixelFormat, ulong tag);
        [DllImport(Lib)] internal static extern unsafe int mmf_frame_writer_publish(FrameWriterHandle w, byte* data, UIntPtr len, out ulong seq);
        [DllImport(Lib)] internal static extern int mmf_frame_writer_create_with(byte[] name, ref NativeFrameSpec spec, out FrameWriterHandle w);
        [DllImport(Lib)] internal static extern unsafe int mmf_frame_writer_publish_with_header(FrameWriterHandle w, byte* hdr, UIntPtr hdrLen, byte* data, UIntPtr len, out ulong seq);
        [DllImport(Lib)] internal static extern int mmf_frame_writer_begin(FrameWriterHandle w, out IntPtr data, out UIntPtr capacity);
        [DllImport(Lib)] internal static extern int mmf_frame_writer_begun_user_header(FrameWriterHandle w, out IntPtr header, out UIntPtr headerLen);
        [DllImport(Lib)] internal static extern int mmf_frame_writer_commit(FrameWriterHandle w, UIntPtr len, out ulong seq);
        [DllImport(Lib)] internal static extern int mmf_frame_writer_abandon(FrameWriterHandle w);
        [DllImport(Lib)] internal static extern int mmf_frame_writer_close(IntPtr w);

        [DllImport(Lib)] internal static extern int mmf_frame_reader_open(byte[] name, out FrameReaderHandle r);
        [DllImport(Lib)] internal static extern int mmf_frame_reader_open_wait(byte[] name, uint timeoutMs, out FrameReaderHandle r);
        [DllImport(Lib)] internal static extern int mmf_frame_reader_wait_next(FrameReaderHandle r, uint timeoutMs, out NativeFrame frame);
        [DllImport(Lib)] internal static extern int mmf_frame_reader_try_next(FrameReaderHandle r, out NativeFrame frame);
        [DllImport(Lib)] internal static extern int mmf_frame_reader_latest(FrameReaderHandle r, out NativeFrame frame);
        [DllImport(Lib)] internal static extern int mmf_frame_reader_release(FrameReaderHandle r);
        [DllImport(Lib)] internal static extern int mmf_frame_reader_writer_alive(FrameReaderHandle r, out byte alive);
        [DllImport(Lib)] internal static extern int mmf_frame_reader_close(IntPtr r);

        /// <summary>MMF_WAIT_FOREVER.</summary>
        internal const uint WaitForever = uint.MaxValue;

        /// <summary>The message of this thread's last failed call. The library owns the
        /// string, so the function returns IntPtr (a string return would make the marshaller
        /// free it) and the bytes are decoded here; Marshal.PtrToStringUTF8 is not in
        /// .NET Framework.</summary>
        internal static unsafe string LastErrorMessage()
        {
            byte* p = (byte*)mmf_last_error_message();
            if (p == null)
                return "";
            int n = 0;
            while (p[n] != 0)
                n++;
            return Encoding.UTF8.GetString(p, n);
        }

        /// <summary>Throws MmfException for a failure status, with the message read right
        /// away, on the thread that made the call (the message is per thread and is
        /// overwritten by the next failure).</summary>
        internal static void Check(int status)
        {
            if (status != 0)
                throw new MmfException((MmfStatus)status, LastErrorMessage());
        }

        /// <summary>name as NUL-terminated UTF-8. An embedded NUL would silently cut the name
        /// short on the C side, so it is refused here.</summary>
        internal static byte[] Name(string name)
        {
            if (name == null)
                throw new ArgumentNullException("name");
            if (name.IndexOf('\0') >= 0)
                throw new ArgumentException("a name cannot contain NUL", "name");
            byte[] bytes = new byte[Encoding.UTF8.GetByteCount(name) + 1];
            Encoding.UTF8.GetBytes(name, 0, name.Length, bytes, 0);
            return bytes;
        }

        /// <summary>A timeout in milliseconds for the C calls: Timeout.InfiniteTimeSpan is
        /// MMF_WAIT_FOREVER; anything longer than that value is capped just below it (about
        /// 49 days), so that a long finite wait never turns into an endless one.</summary>
        internal static uint Millis(TimeSpan timeout)
        {
            if (timeout == Timeout.InfiniteTimeSpan)
                return WaitForever;
            if (timeout < TimeSpan.Zero)
                throw new ArgumentOutOfRangeException("timeout", "a timeout cannot be negative (but Timeout.InfiniteTimeSpan)");
            double ms = Math.Ceiling(timeout.TotalMilliseconds);
            return ms >= WaitForever ? WaitForever - 1 : (uint)ms;
        }

        internal static UIntPtr Size(long value, string what)
        {
            if (value < 0)
                throw new ArgumentOutOfRangeException(what, "cannot be negative");
            if (UIntPtr.Size == 4 && value > uint.MaxValue)
                throw new ArgumentOutOfRangeException(what, "does not fit a 32-bit size_t");
            return new UIntPtr((ulong)value);
        }
    }

    /// <summary>A named shared memory segment with a reader/writer lock inside it.</summary>
    public sealed class Segment : IDisposable
    {
        private readonly SegmentHandle handle;
        // The lock this object holds, a WriteLock or a ReadLock (at most one: the C handle
        // refuses a second of either kind).
        private object held;

        private Segment(SegmentHandle handle) { this.handle = handle; }

        /// <summary>Creates the segment name with size zeroed data bytes. The creator owns the
        /// name: disposing it removes the name (on Linux).</summary>
        public static Segment Create(string name, long size)
        {
            SegmentHandle h;
            Native.Check(Native.mmf_segment_create(Native.Name(name), Native.Size(size, "size"), out h));
            return new Segment(h);
        }

        /// <summary>Opens the existing segment name for reading and writing.</summary>
        public static Segment Open(string name)
        {
            SegmentHandle h;
            Native.Check(Native.mmf_segment_open(Native.Name(name), out h));
            return new Segment(h);
        }

        /// <summary>Opens the existing segment name for reading only; writes throw.</summary>
        public static Segment OpenReadOnly(string name)
        {
            SegmentHandle h;
            Native.Check(Native.mmf_segment_open_read_only(Native.Name(name), out h));
            return new Segment(h);
        }

        /// <summary>Removes the name (for names a crashed creator left behind); open
        /// segments keep their mapping.</summary>
        public static void Remove(string name)
        {
            Native.Check(Native.mmf_segment_remove(Native.Name(name)));
        }

        /// <summary>The data length in bytes.</summary>
        public long Length
        {
            get
            {
                UIntPtr len;
                Native.Check(Native.mmf_segment_len(handle, out len));
                return (long)len.ToUInt64();
            }
        }

        /// <summary>Copies buffer.Length bytes at offset into buffer, under the read lock.</summary>
        public unsafe void Read(long offset, Span<byte> buffer)
        {
            fixed (byte* p = &MemoryMarshal.GetReference(buffer))
                Native.Check(Native.mmf_segment_read_at(handle, Native.Size(offset, "offset"), p, new UIntPtr((uint)buffer.Length)));
        }

        /// <summary>Copies data to offset, under the write lock.</summary>
        public unsafe void Write(long offset, ReadOnlySpan<byte> data)
        {
            fixed (byte* p = &MemoryMarshal.GetReference(data))
                Native.Check(Native.mmf_segment_write_at(handle, Native.Size(offset, "offset"), p, new UIntPtr((uint)data.Length)));
        }

        /// <summary>length bytes at offset, as a new array.</summary>
        public byte[] Read(long offset, int length)
        {
            byte[] buffer = new byte[length];
            Read(offset, new Span<byte>(buffer));
            return buffer;
        }

        public void Write(long offset, byte[] data)
        {
            Write(offset, new ReadOnlySpan<byte>(data));
        }

        /// <summary>The write sequence number, bumped by every release of the write lock.</summary>
        public uint WriteSeq
        {
            get
            {
                uint seq;
                Native.Check(Native.mmf_segment_write_seq(handle, out seq));
                return seq;
            }
        }

        /// <summary>Waits until the write sequence number differs from seen; returns the new
        /// one, or null if it did not change within timeout.</summary>
        public uint? WaitForWrite(uint seen, TimeSpan timeout)
        {
            uint seq;
            int status = Native.mmf_segment_wait_for_write(handle, seen, Native.Millis(timeout), out seq);
            if (status == (int)MmfStatus.Timeout)
                return null;
            Native.Check(status);
            return seq;
        }

        /// <summary>Whether a process died holding the write lock.</summary>
        public bool IsPoisoned
        {
            get
            {
                byte poisoned;
                Native.Check(Native.mmf_segment_is_poisoned(handle, out poisoned));
                return poisoned != 0;
            }
        }

        /// <summary>Declares the data repaired after a poisoning.</summary>
        public void ClearPoison()
        {
            Native.Check(Native.mmf_segment_clear_poison(handle));
        }

        /// <summary>Takes the write lock for in-place access (using (var l = seg.LockWrite(..))
        /// { l.Data ... }); other processes wait until it is disposed. Throws MmfException
        /// with Status Timeout if the lock was not free in time. If a process died holding
        /// it, the lock is taken anyway and WasPoisoned is true: repair the data and call
        /// ClearPoison before disposing it.</summary>
        public WriteLock LockWrite(TimeSpan timeout)
        {
            IntPtr data;
            UIntPtr len;
            int status = Native.mmf_segment_lock_write(handle, Native.Millis(timeout), out data, out len);
            // Poisoned: the C call holds the lock and set data and len, so it must be handed
            // out (and unlocked) like a clean one, not lost in an exception.
            if (status != 0 && status != (int)MmfStatus.Poisoned)
                Native.Check(status);
            if (len.ToUInt64() > int.MaxValue)
            {
                // A Span cannot cover it: give the lock back rather than leave it held.
                Native.mmf_segment_unlock_write(handle);
                throw new NotSupportedException("LockWrite gives a Span, at most 2 GiB; use Read and Write at offsets for larger segments");
            }
            WriteLock l = new WriteLock(this, data, (int)len.ToUInt64(), status == (int)MmfStatus.Poisoned);
            held = l;
            return l;
        }

        /// <summary>Takes a shared read lock for in-place reading (using (var l =
        /// seg.LockRead(..)) { l.Data ... }): other readers, in this process or others, may
        /// hold it too; writers wait until it is disposed. Throws MmfException with Status
        /// Timeout if a writer held the lock for longer than timeout, and InvalidArgument if
        /// this Segment holds a lock already (a second one would wait for itself) or was opened
        /// read-only (readers take part in the lock word, which needs a read-write handle). If
        /// a process died holding the write lock, the read lock is taken anyway and
        /// WasPoisoned is true: the data may be half written.</summary>
        public ReadLock LockRead(TimeSpan timeout)
        {
            IntPtr data;
            UIntPtr len;
            int status = Native.mmf_segment_lock_read(handle, Native.Millis(timeout), out data, out len);
            // Poisoned: held anyway, with data and len set (as in LockWrite).
            if (status != 0 && status != (int)MmfStatus.Poisoned)
                Native.Check(status);
            if (len.ToUInt64() > int.MaxValue)
            {
                Native.mmf_segment_unlock_read(handle);
                throw new NotSupportedException("LockRead gives a Span, at most 2 GiB; use Read at offsets for larger segments");
            }
            ReadLock l = new ReadLock(this, data, (int)len.ToUInt64(), status == (int)MmfStatus.Poisoned);
            held = l;
            return l;
        }

        internal void Unlock(object l)
        {
            if (held != l)
                return;
            held = null;
            // Closing the segment releases the lock too; then there is nothing left to unlock.
            // Dispose does not throw: the unlock fails only for a handle that does not hold
            // the lock, which `held` rules out.
            if (!handle.IsClosed)
            {
                int status = l is ReadLock ? Native.mmf_segment_unlock_read(handle) : Native.mmf_segment_unlock_write(handle);
                Debug.Assert(status == 0, "mmf_segment_unlock_read/write failed for the holding handle");
            }
        }

        internal bool Holds(object l) { return held == l && !handle.IsClosed; }

        public void Dispose()
        {
            held = null;
            handle.Dispose();
        }
    }

    /// <summary>The segment's write lock, held until Dispose; Data is the whole data region,
    /// readable and writable in place meanwhile.</summary>
    public sealed class WriteLock : IDisposable
    {
        private readonly Segment segment;
        private readonly IntPtr data;
        private readonly int length;

        internal WriteLock(Segment segment, IntPtr data, int length, bool wasPoisoned)
        {
            this.segment = segment;
            this.data = data;
            this.length = length;
            WasPoisoned = wasPoisoned;
        }

        /// <summary>A process died holding the lock before this one took it.</summary>
        public bool WasPoisoned { get; private set; }

        /// <summary>The data region. Valid only until Dispose (or the segment's Dispose).</summary>
        public unsafe Span<byte> Data
        {
            get
            {
                if (!segment.Holds(this))
                    throw new ObjectDisposedException("WriteLock");
                return new Span<byte>((void*)data, length);
            }
        }

        public void Dispose() { segment.Unlock(this); }
    }

    /// <summary>A shared read lock on the segment, held until Dispose; Data is the whole data
    /// region, readable in place meanwhile (writers in every process wait).</summary>
    public sealed class ReadLock : IDisposable
    {
        private readonly Segment segment;
        private readonly IntPtr data;
        private readonly int length;

        internal ReadLock(Segment segment, IntPtr data, int length, bool wasPoisoned)
        {
            this.segment = segment;
            this.data = data;
            this.length = length;
            WasPoisoned = wasPoisoned;
        }

        /// <summary>A process died holding the write lock before this one was taken: the data
        /// may be half written.</summary>
        public bool WasPoisoned { get; private set; }

        /// <summary>The data region, read-only (the mapping may be too). Valid only until
        /// Dispose (or the segment's Dispose): the span itself cannot be checked afterwards,
        /// so use it inside the using block.</summary>
        public unsafe ReadOnlySpan<byte> Data
        {
            get
            {
                if (!segment.Holds(this))
                    throw new ObjectDisposedException("ReadLock");
                return new ReadOnlySpan<byte>((void*)data, length);
            }
        }

        /// <summary>Releases the read lock; a second Dispose does nothing.</summary>
        public void Dispose() { segment.Unlock(this); }
    }

    /// <summary>Parameters of a new frame channel beyond its maximum frame length (see
    /// FrameWriter.Create). A 0 in any property asks for its default:
    /// new FrameSpec { MaxReaders = 8, UserHeaderLength = 64 }.</summary>
    public sealed class FrameSpec
    {
        /// <summary>Readers that may be open at once, 1 to 32 (0: 4).</summary>
        public int MaxReaders { get; set; }

        /// <summary>Frame slots, MaxReaders + 2 to 62 (0: as many as fit in 32 MiB, at most 16
        /// and at least MaxReaders + 2). More slots never change what readers see.</summary>
        public int Slots { get; set; }

        /// <summary>Bytes of the user header each frame carries beside its payload, 0 to 4096
        /// (0: none). Costs one page per slot.</summary>
        public int UserHeaderLength { get; set; }

        /// <summary>Who may open the channel as a reader, as Unix permission bits (0: 0600,
        /// this user only; C# has no octal literals: Convert.ToUInt32("640", 8) also lets the
        /// group read, "644" everyone). On Windows translated into security
        /// descriptors.</summary>
        public uint Mode { get; set; }
    }

    /// <summary>The one writer of a frame channel.</summary>
    public sealed class FrameWriter : IDisposable
    {
        private readonly FrameWriterHandle handle;
        // The frame begun in place and neither committed nor abandoned yet, if any (the C
        // handle has at most one).
        private PendingFrame pending;

        private FrameWriter(FrameWriterHandle handle) { this.handle = handle; }

        /// <summary>Creates the frame channel name for frames of up to maxFrameLength bytes and
        /// up to maxReaders readers at once.</summary>
        public static FrameWriter Create(string name, long maxFrameLength, int maxReaders)
        {
            FrameWriterHandle h;
            Native.Check(Native.mmf_frame_writer_create(Native.Name(name), Native.Size(maxFrameLength, "maxFrameLength"), Native.Size(maxReaders, "maxReaders"), out h));
            return new FrameWriter(h);
        }

        /// <summary>Creates the frame channel name for frames of up to maxFrameLength bytes, as
        /// spec says (null, or 0 in a property: the defaults). MmfException InvalidArgument for
        /// values out of range, AlreadyExists if a live writer has the name (a dead one's
        /// channel is taken over).</summary>
        public static FrameWriter Create(string name, long maxFrameLength, FrameSpec spec)
        {
            if (spec == null)
                spec = new FrameSpec();
            NativeFrameSpec native = new NativeFrameSpec
            {
                MaxFrameLen = Native.Size(maxFrameLength, "maxFrameLength"),
                MaxReaders = Native.Size(spec.MaxReaders, "spec.MaxReaders"),
                Slots = Native.Size(spec.Slots, "spec.Slots"),
                UserHeaderLen = Native.Size(spec.UserHeaderLength, "spec.UserHeaderLength"),
                Mode = spec.Mode,
            };
            FrameWriterHandle h;
            Native.Check(Native.mmf_frame_writer_create_with(Native.Name(name), ref native, out h));
            return new FrameWriter(h);
        }

        /// <summary>Sets the user fields published with the following frames, including a
        /// frame begun with Begin and not yet committed.</summary>
        public void SetMeta(uint width, uint height, uint pixelFormat, ulong tag)
        {
            Native.Check(Native.mmf_frame_writer_set_meta(handle, width, height, pixelFormat, tag));
        }

        /// <summary>Publishes a copy of data as the next frame; returns its sequence number.
        /// MmfException TooLarge if data is longer than the channel's maximum frame length,
        /// InvalidArgument while a frame begun with Begin is pending.</summary>
        public unsafe ulong Publish(ReadOnlySpan<byte> data)
        {
            ulong seq;
            fixed (byte* p = &MemoryMarshal.GetReference(data))
                Native.Check(Native.mmf_frame_writer_publish(handle, p, new UIntPtr((uint)data.Length), out seq));
            return seq;
        }

        public ulong Publish(byte[] data) { return Publish(new ReadOnlySpan<byte>(data)); }

        /// <summary>As Publish(data), with the frame's user header: header (at most the
        /// channel's FrameSpec.UserHeaderLength bytes; the rest of the header is zeroed)
        /// travels with the frame, and readers get it as Frame.UserHeader. Both are copied.
        /// MmfException InvalidArgument if header is too long (nothing is published).</summary>
        public unsafe ulong Publish(ReadOnlySpan<byte> data, ReadOnlySpan<byte> header)
        {
            ulong seq;
            fixed (byte* h = &MemoryMarshal.GetReference(header))
            fixed (byte* p = &MemoryMarshal.GetReference(data))
                Native.Check(Native.mmf_frame_writer_publish_with_header(handle, h, new UIntPtr((uint)header.Length), p, new UIntPtr((uint)data.Length), out seq));
            return seq;
        }

        public ulong Publish(byte[] data, byte[] header)
        {
            return Publish(new ReadOnlySpan<byte>(data), new ReadOnlySpan<byte>(header));
        }

        /// <summary>Begins a frame written in place, in a free slot of the shared memory (no
        /// copy): write PendingFrame.Data (and UserHeader), then Commit publishes it; Dispose
        /// without Commit abandons it (readers never see it, and no sequence number is used).
        /// Use it in a using block. While it is pending, Publish and a second Begin throw
        /// MmfException InvalidArgument; SetMeta (here or on the PendingFrame) sets its
        /// metadata.</summary>
        public PendingFrame Begin()
        {
            IntPtr data, header;
            UIntPtr capacity, headerLen;
            Native.Check(Native.mmf_frame_writer_begin(handle, out data, out capacity));
            int status = Native.mmf_frame_writer_begun_user_header(handle, out header, out headerLen);
            if (status == 0 && capacity.ToUInt64() > int.MaxValue)
            {
                Native.mmf_frame_writer_abandon(handle);
                throw new NotSupportedException("Begin gives a Span, at most 2 GiB; use Publish for channels with larger frames");
            }
            if (status != 0)
            {
                // Cannot happen right after a successful begin, but a frame left begun would
                // make every later Publish fail: give it back before reporting.
                string message = Native.LastErrorMessage();
                Native.mmf_frame_writer_abandon(handle);
                throw new MmfException((MmfStatus)status, message);
            }
            pending = new PendingFrame(this, data, (int)capacity.ToUInt64(), header, (int)headerLen.ToUInt64());
            return pending;
        }

        internal bool Holds(PendingFrame f) { return pending == f && !handle.IsClosed; }

        internal ulong Commit(PendingFrame f, int length)
        {
            if (!Holds(f))
                throw new ObjectDisposedException("PendingFrame", "the frame was committed or abandoned already (or its writer disposed)");
            if (length < 0)
                throw new ArgumentOutOfRangeException("length", "cannot be negative");
            // The C commit ends the begun frame whatever it returns (too large: abandoned).
            pending = null;
            ulong seq;
            Native.Check(Native.mmf_frame_writer_commit(handle, new UIntPtr((uint)length), out seq));
            return seq;
        }

        internal void Abandon(PendingFrame f)
        {
            if (!Holds(f))
                return;
            pending = null;
            // Dispose does not throw: abandon fails only when no frame is begun, which
            // `pending` rules out.
            int status = Native.mmf_frame_writer_abandon(handle);
            Debug.Assert(status == 0, "mmf_frame_writer_abandon failed with a frame begun");
        }

        /// <summary>Closes the channel (abandoning a pending frame): readers see WriterGone,
        /// and the name is removed.</summary>
        public void Dispose()
        {
            pending = null;
            handle.Dispose();
        }
    }

    /// <summary>A frame being written in place (FrameWriter.Begin) until Commit or Dispose;
    /// every member but Dispose throws ObjectDisposedException after either, or after the
    /// writer's Dispose.</summary>
    public sealed class PendingFrame : IDisposable
    {
        private readonly FrameWriter writer;
        private readonly IntPtr data;
        private readonly int capacity;
        private readonly IntPtr header;
        private readonly int headerLength;

        internal PendingFrame(FrameWriter writer, IntPtr data, int capacity, IntPtr header, int headerLength)
        {
            this.writer = writer;
            this.data = data;
            this.capacity = capacity;
            this.header = header;
            this.headerLength = headerLength;
        }

        private void Live()
        {
            if (!writer.Holds(this))
                throw new ObjectDisposedException("PendingFrame", "the frame was committed or abandoned (Commit, Dispose, or the writer's Dispose)");
        }

        /// <summary>The channel's maximum frame length: the most Commit can publish.</summary>
        public int Capacity { get { Live(); return capacity; } }

        /// <summary>The frame's bytes, Capacity long, in the channel's shared memory. They hold
        /// whatever an earlier frame left there: write every byte you publish. The span cannot
        /// be checked after Commit or Dispose; use it before.</summary>
        public unsafe Span<byte> Data
        {
            get { Live(); return new Span<byte>((void*)data, capacity); }
        }

        /// <summary>The frame's user header (FrameSpec.UserHeaderLength bytes, zeroed by
        /// Begin; empty on a channel without user headers), published with the frame. Same
        /// lifetime as Data.</summary>
        public unsafe Span<byte> UserHeader
        {
            get { Live(); return new Span<byte>((void*)header, headerLength); }
        }

        /// <summary>Sets this frame's user fields (as FrameWriter.SetMeta, which they also
        /// stay for the following frames).</summary>
        public void SetMeta(uint width, uint height, uint pixelFormat, ulong tag)
        {
            Live();
            writer.SetMeta(width, height, pixelFormat, tag);
        }

        /// <summary>Publishes the first length bytes of Data (and the user header) and returns
        /// the frame's sequence number; the frame is over either way. MmfException TooLarge if
        /// length exceeds Capacity (then nothing is published).</summary>
        public ulong Commit(int length) { return writer.Commit(this, length); }

        /// <summary>Abandons the frame unless it was committed; a no-op after Commit.</summary>
        public void Dispose() { writer.Abandon(this); }
    }

    /// <summary>A reader of a frame channel. It holds at most one frame: taking the next one
    /// (WaitNext, TryNext, Latest) ends the previous Frame.</summary>
    public sealed class FrameReader : IDisposable
    {
        private readonly FrameReaderHandle handle;
        // Counts the frames taken, so that a Frame can tell whether it is still the held one.
        private long generation;

        private FrameReader(FrameReaderHandle handle) { this.handle = handle; }

        /// <summary>Opens a reader on the frame channel name (MmfException NotFound if there
        /// is none yet).</summary>
        public static FrameReader Open(string name)
        {
            FrameReaderHandle h;
            Native.Check(Native.mmf_frame_reader_open(Native.Name(name), out h));
            return new FrameReader(h);
        }

        /// <summary>Opens a reader on the frame channel name, waiting up to timeout for the
        /// channel to appear (a consumer started before its camera, or reopening after
        /// WriterGone while the camera restarts); the wait sleeps, it does not poll.
        /// MmfException Timeout if it did not appear in time.</summary>
        public static FrameReader OpenWait(string name, TimeSpan timeout)
        {
            FrameReaderHandle h;
            Native.Check(Native.mmf_frame_reader_open_wait(Native.Name(name), Native.Millis(timeout), out h));
            return new FrameReader(h);
        }

        /// <summary>Waits up to timeout for a frame newer than the last one this reader took,
        /// and returns the newest (skipping any in between; the first call returns the current
        /// frame at once, if there is one). null if none came in time; MmfException WriterGone
        /// once the writer closed and this reader has taken its last frame.</summary>
        public Frame WaitNext(TimeSpan timeout)
        {
            NativeFrame f;
            generation++;
            int status = Native.mmf_frame_reader_wait_next(handle, Native.Millis(timeout), out f);
            return Take(status, MmfStatus.Timeout, f);
        }

        /// <summary>The newest frame if it is newer than the last one this reader took, else
        /// null, without waiting.</summary>
        public Frame TryNext()
        {
            NativeFrame f;
            generation++;
            int status = Native.mmf_frame_reader_try_next(handle, out f);
            return Take(status, MmfStatus.WouldBlock, f);
        }

        /// <summary>The newest frame, which may be the one this reader took last time; null
        /// before the first publish.</summary>
        public Frame Latest()
        {
            NativeFrame f;
            generation++;
            int status = Native.mmf_frame_reader_latest(handle, out f);
            return Take(status, MmfStatus.WouldBlock, f);
        }

        /// <summary>Whether the channel's writer is still there: it has not closed the
        /// channel and its process has not died. Asks the OS (a system call or two): for a
        /// consumer polling with Latest, which keeps giving the last frame, now and then, not
        /// for every frame. Leaves the held frame alone.</summary>
        public bool WriterAlive
        {
            get
            {
                byte alive;
                Native.Check(Native.mmf_frame_reader_writer_alive(handle, out alive));
                return alive != 0;
            }
        }

        // The generation is bumped before the call: the C side releases the held frame even
        // when the call fails, so the previous Frame is over either way.
        private Frame Take(int status, MmfStatus none, NativeFrame f)
        {
            if (status == (int)none)
                return null;
            Native.Check(status);
            return new Frame(this, generation, f);
        }

        internal bool Holds(long g) { return g == generation && !handle.IsClosed; }

        internal void Release(long g)
        {
            if (!Holds(g))
                return;
            generation++;
            // Dispose does not throw: release fails only for a bad handle, which the
            // SafeHandle rules out (Holds checked that it is open).
            int status = Native.mmf_frame_reader_release(handle);
            Debug.Assert(status == 0, "mmf_frame_reader_release failed on an open reader");
        }

        /// <summary>Closes the reader, ending its frame.</summary>
        public void Dispose()
        {
            generation++;
            handle.Dispose();
        }
    }

    /// <summary>A frame in shared memory, valid until Dispose, the reader's next take, or the
    /// reader's Dispose; every member throws ObjectDisposedException after that.</summary>
    public sealed class Frame : IDisposable
    {
        private readonly FrameReader reader;
        private readonly long generation;
        private readonly NativeFrame f;

        internal Frame(FrameReader reader, long generation, NativeFrame f)
        {
            this.reader = reader;
            this.generation = generation;
            this.f = f;
        }

        private void Live()
        {
            if (!reader.Holds(generation))
                throw new ObjectDisposedException("Frame", "the frame was released (Dispose, the reader's next take, or the reader's Dispose)");
        }

        /// <summary>1 for the channel's first frame, +1 per publish.</summary>
        public ulong Seq { get { Live(); return f.Seq; } }
        /// <summary>Publish time, nanoseconds on a monotonic clock shared across processes.</summary>
        public ulong TimestampNs { get { Live(); return f.TimestampNs; } }
        public uint Width { get { Live(); return f.Width; } }
        public uint Height { get { Live(); return f.Height; } }
        public uint PixelFormat { get { Live(); return f.PixelFormat; } }
        public ulong Tag { get { Live(); return f.Tag; } }
        public int Length { get { Live(); return checked((int)f.Len.ToUInt64()); } }

        /// <summary>The bytes, in place in shared memory (no copy). The span itself cannot be
        /// checked after the frame ends: use it inside the Frame's using block, which also
        /// keeps the Frame (and so its reader) from being collected, and closed by the
        /// finalizer, while the span is in use.</summary>
        public unsafe ReadOnlySpan<byte> Data
        {
            get { Live(); return new ReadOnlySpan<byte>((void*)f.Data, checked((int)f.Len.ToUInt64())); }
        }

        /// <summary>The frame's user header, in place: the channel's
        /// FrameSpec.UserHeaderLength bytes the writer published with this very frame (zeros
        /// from a Publish without header; empty on a channel without user headers). Same
        /// lifetime rules as Data.</summary>
        public unsafe ReadOnlySpan<byte> UserHeader
        {
            get { Live(); return new ReadOnlySpan<byte>((void*)f.UserHeader, checked((int)f.UserHeaderLen.ToUInt64())); }
        }

        /// <summary>The address of the bytes, for native code; same lifetime as Data.</summary>
        public IntPtr Pointer { get { Live(); return f.Data; } }

        /// <summary>Copies the bytes into destination (which must be at least Length long).</summary>
        public void CopyTo(byte[] destination) { Data.CopyTo(new Span<byte>(destination)); }

        public byte[] ToArray() { return Data.ToArray(); }

        /// <summary>Releases the frame, letting the writer reuse its slot.</summary>
        public void Dispose() { reader.Release(generation); }
    }
}
