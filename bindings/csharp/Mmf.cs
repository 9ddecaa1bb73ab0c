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
// ObjectDisposedException instead of reading memory the writer may be reusing.
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
        // The library writes the whole struct: these must be here even while unused.
        public IntPtr UserHeader;
        public UIntPtr UserHeaderLen;
        public uint Width;
        public uint Height;
        public uint PixelFormat;
        public uint Reserved;
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

        [DllImport(Lib)] internal static extern int mmf_frame_writer_create(byte[] name, UIntPtr maxFrameLen, UIntPtr maxReaders, out FrameWriterHandle w);
        [DllImport(Lib)] internal static extern int mmf_frame_writer_set_meta(FrameWriterHandle w, uint width, uint height, uint pixelFormat, ulong tag);
        [DllImport(Lib)] internal static extern unsafe int mmf_frame_writer_publish(FrameWriterHandle w, byte* data, UIntPtr len, out ulong seq);
        [DllImport(Lib)] internal static extern int mmf_frame_writer_close(IntPtr w);

        [DllImport(Lib)] internal static extern int mmf_frame_reader_open(byte[] name, out FrameReaderHandle r);
        [DllImport(Lib)] internal static extern int mmf_frame_reader_wait_next(FrameReaderHandle r, uint timeoutMs, out NativeFrame frame);
        [DllImport(Lib)] internal static extern int mmf_frame_reader_try_next(FrameReaderHandle r, out NativeFrame frame);
        [DllImport(Lib)] internal static extern int mmf_frame_reader_latest(FrameReaderHandle r, out NativeFrame frame);
        [DllImport(Lib)] internal static extern int mmf_frame_reader_release(FrameReaderHandle r);
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
        // The lock this object holds (at most one: the C handle refuses a second).
        private WriteLock held;

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
            held = new WriteLock(this, data, (int)len.ToUInt64(), status == (int)MmfStatus.Poisoned);
            return held;
        }

        internal void Unlock(WriteLock l)
        {
            if (held != l)
                return;
            held = null;
            // Closing the segment releases the lock too; then there is nothing left to unlock.
            // Dispose does not throw: the unlock fails only for a handle that does not hold
            // the lock, which `held` rules out.
            if (!handle.IsClosed)
            {
                int status = Native.mmf_segment_unlock_write(handle);
                Debug.Assert(status == 0, "mmf_segment_unlock_write failed for the holding handle");
            }
        }

        internal bool Holds(WriteLock l) { return held == l && !handle.IsClosed; }

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

    /// <summary>The one writer of a frame channel.</summary>
    public sealed class FrameWriter : IDisposable
    {
        private readonly FrameWriterHandle handle;

        private FrameWriter(FrameWriterHandle handle) { this.handle = handle; }

        /// <summary>Creates the frame channel name for frames of up to maxFrameLength bytes and
        /// up to maxReaders readers at once.</summary>
        public static FrameWriter Create(string name, long maxFrameLength, int maxReaders)
        {
            FrameWriterHandle h;
            Native.Check(Native.mmf_frame_writer_create(Native.Name(name), Native.Size(maxFrameLength, "maxFrameLength"), Native.Size(maxReaders, "maxReaders"), out h));
            return new FrameWriter(h);
        }

        /// <summary>Sets the user fields published with the following frames.</summary>
        public void SetMeta(uint width, uint height, uint pixelFormat, ulong tag)
        {
            Native.Check(Native.mmf_frame_writer_set_meta(handle, width, height, pixelFormat, tag));
        }

        /// <summary>Publishes a copy of data as the next frame; returns its sequence number.</summary>
        public unsafe ulong Publish(ReadOnlySpan<byte> data)
        {
            ulong seq;
            fixed (byte* p = &MemoryMarshal.GetReference(data))
                Native.Check(Native.mmf_frame_writer_publish(handle, p, new UIntPtr((uint)data.Length), out seq));
            return seq;
        }

        public ulong Publish(byte[] data) { return Publish(new ReadOnlySpan<byte>(data)); }

        /// <summary>Closes the channel: readers see WriterGone, and the name is removed.</summary>
        public void Dispose() { handle.Dispose(); }
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

        /// <summary>The address of the bytes, for native code; same lifetime as Data.</summary>
        public IntPtr Pointer { get { Live(); return f.Data; } }

        /// <summary>Copies the bytes into destination (which must be at least Length long).</summary>
        public void CopyTo(byte[] destination) { Data.CopyTo(new Span<byte>(destination)); }

        public byte[] ToArray() { return Data.ToArray(); }

        /// <summary>Releases the frame, letting the writer reuse its slot.</summary>
        public void Dispose() { reader.Release(generation); }
    }
}
