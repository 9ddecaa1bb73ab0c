// The C# binding against real processes: the Rust camera demo, a Rust consumer, and this
// program started again as a second mono process. Built and run by `cargo xtask test --only
// csharp`; by hand (from the workspace root, after `cargo build -p mmf-ffi` and `cargo build
// --example camera -p mmf`):
//
//   mcs -unsafe -out:FramesTest.exe bindings/csharp/Mmf.cs bindings/csharp/tests/FramesTest.cs
//   LD_LIBRARY_PATH=target/debug mono FramesTest.exe --camera target/debug/examples/camera
//
// Prints one line per check; exits with 1 if any failed.

using System;
using System.Diagnostics;
using System.IO;
using System.Reflection;
using System.Text;
using System.Threading;
using Mmf;

static class FramesTest
{
    const uint Width = 320;
    const uint Height = 240;
    const int FrameLen = (int)(Width * Height * 3);
    static readonly TimeSpan Second = TimeSpan.FromSeconds(1);

    static int failures;
    static int passed;

    static void Check(bool ok, string what)
    {
        if (ok)
        {
            passed++;
            Console.WriteLine("ok   " + what);
        }
        else
        {
            failures++;
            Console.WriteLine("FAIL " + what);
        }
    }

    /// Runs action and checks that it throws T (and, for MmfException, the status).
    static T Throws<T>(string what, Action action, MmfStatus? status = null) where T : Exception
    {
        try
        {
            action();
        }
        catch (T e)
        {
            MmfException m = e as MmfException;
            bool ok = status == null || (m != null && m.Status == status.Value);
            Check(ok, what + " throws " + typeof(T).Name + (status == null ? "" : " " + status) + ": " + OneLine(e.Message));
            return e;
        }
        catch (Exception e)
        {
            Check(false, what + " throws " + typeof(T).Name + ", but threw " + e.GetType().Name + ": " + e.Message);
            return null;
        }
        Check(false, what + " throws " + typeof(T).Name + ", but did not throw");
        return null;
    }

    static int Main(string[] args)
    {
        try
        {
            if (args.Length == 4 && args[0] == "--read-frames")
                return ReadFramesChild(args[1], int.Parse(args[2]), int.Parse(args[3]));
            if (args.Length == 2 && args[0] == "--lock-and-wait")
                return LockAndWaitChild(args[1]);
            if (args.Length == 2 && args[0] == "--read-lock-and-wait")
                return ReadLockAndWaitChild(args[1]);
            string camera = Environment.GetEnvironmentVariable("MMF_CAMERA");
            int frames = 60;
            for (int i = 0; i + 1 < args.Length; i += 2)
            {
                if (args[i] == "--camera") camera = args[i + 1];
                else if (args[i] == "--frames") frames = int.Parse(args[i + 1]);
                else throw new ArgumentException("unknown argument " + args[i]);
            }
            if (string.IsNullOrEmpty(camera) || !File.Exists(camera))
                throw new ArgumentException("pass the camera example's path with --camera PATH or MMF_CAMERA (cargo build --example camera -p mmf)");

            // Each part on its own: an exception fails that part and the others still run.
            Part(() => FromRustCamera(camera, frames));
            Part(() => ToRustAndCSharpReaders(camera, false));
            Part(() => ToRustAndCSharpReaders(camera, true));
            Part(SegmentRoundTrip);
            Part(ReadLocks);
            Part(UserHeaders);
            Part(OpenWait);
            Part(Errors);
            Part(OrderingErrors);
        }
        catch (Exception e)
        {
            Check(false, "unexpected exception: " + e);
        }
        Console.WriteLine(failures == 0
            ? "csharp: all " + passed + " checks passed"
            : "csharp: " + failures + " of " + (passed + failures) + " checks FAILED");
        return failures == 0 ? 0 : 1;
    }

    static void Part(Action part)
    {
        try
        {
            part();
        }
        catch (Exception e)
        {
            Check(false, "unexpected exception: " + e);
        }
    }

    // -----------------------------------------------------------------------------------------
    // The camera's picture (crates/mmf/examples/camera.rs `render`): colour bars shifted by 4
    // pixels per frame, a white square bouncing, and the frame number n (little-endian u64)
    // over the first 8 bytes. A frame must be exactly render(n) for its stamp n: one misplaced
    // or stale byte (a torn frame, a wrong offset, a wrong length) fails the comparison.

    static readonly byte[][] Bars =
    {
        new byte[] { 235, 235, 235 }, new byte[] { 235, 235, 16 }, new byte[] { 16, 235, 235 },
        new byte[] { 16, 235, 16 }, new byte[] { 235, 16, 235 }, new byte[] { 235, 16, 16 },
        new byte[] { 16, 16, 235 }, new byte[] { 16, 16, 16 },
    };

    static void Render(ulong n, int width, int height, Span<byte> frame)
    {
        int rowLen = width * 3;
        int shift = (int)((n * 4) % (ulong)Math.Max(width, 1));
        for (int x = 0; x < width; x++)
        {
            byte[] bar = Bars[((x + shift) * 8 / Math.Max(width, 1)) % 8];
            bar.CopyTo(frame.Slice(x * 3, 3));
        }
        for (int y = 1; y < height; y++)
            frame.Slice(0, rowLen).CopyTo(frame.Slice(y * rowLen, rowLen));
        int side = Math.Min(Math.Max(height / 8, 1), width);
        int spanX = Math.Max(width - side, 1), spanY = Math.Max(height - side, 1);
        Func<ulong, int, int> bounce = (t, span) =>
        {
            int m = (int)(t % (ulong)(2 * span));
            return m < span ? m : 2 * span - m;
        };
        int bx = bounce(n * 7, spanX), by = bounce(n * 5, spanY);
        for (int y = by; y < Math.Min(by + side, height); y++)
        {
            int start = y * rowLen + bx * 3;
            int end = Math.Min(start + side * 3, (y + 1) * rowLen);
            frame.Slice(start, end - start).Fill(255);
        }
        if (frame.Length >= 8)
            BitConverter.GetBytes(n).CopyTo(frame);
    }

    // The user header the writers of (b) put on frame n: n (little-endian u64), then bytes
    // that differ from frame to frame, so a header travelling with the wrong frame shows.
    const int HeaderLen = 24;

    static void RenderHeader(ulong n, Span<byte> header)
    {
        BitConverter.GetBytes(n).CopyTo(header);
        for (int i = 8; i < header.Length; i++)
            header[i] = (byte)(n * 31 + (ulong)i);
    }

    static ulong Stamp(ReadOnlySpan<byte> data)
    {
        ulong n = 0;
        for (int i = 7; i >= 0; i--)
            n = (n << 8) | data[i];
        return n;
    }

    /// Checks one frame (every byte of it): returns null if it is good, else what is wrong.
    static string Verify(Frame f, ulong previousStamp, byte[] expected, int headerLen = 0)
    {
        if (f.UserHeader.Length != headerLen)
            return "user header of " + f.UserHeader.Length + " bytes";
        if (headerLen > 0)
        {
            byte[] header = new byte[headerLen];
            RenderHeader(f.Tag, header);
            if (!f.UserHeader.SequenceEqual(header))
                return "frame " + f.Tag + "'s user header is not RenderHeader(" + f.Tag + ")";
        }
        if (f.Width != Width || f.Height != Height)
            return "size " + f.Width + "x" + f.Height;
        if (f.PixelFormat != PixelFormats.Rgb24)
            return "pixel format 0x" + f.PixelFormat.ToString("x");
        if (f.Length != FrameLen)
            return "length " + f.Length;
        ReadOnlySpan<byte> data = f.Data;
        ulong stamp = Stamp(data);
        if (stamp != f.Tag)
            return "stamp " + stamp + " but tag " + f.Tag;
        if (stamp <= previousStamp)
            return "stamp " + stamp + " after " + previousStamp;
        Render(stamp, (int)Width, (int)Height, expected);
        if (!data.SequenceEqual(new ReadOnlySpan<byte>(expected)))
        {
            int at = 0;
            while (data[at] == expected[at]) at++;
            return "frame " + stamp + " differs from render(" + stamp + ") at byte " + at;
        }
        return null;
    }

    // -----------------------------------------------------------------------------------------
    // (a) The Rust camera demo as a separate process, this program its reader.

    static void FromRustCamera(string camera, int wanted)
    {
        Console.WriteLine("== (a) reading the Rust camera demo");
        string name = "mmf-cs-camera-" + Process.GetCurrentProcess().Id;
        // One consumer of the demo's own (a Rust process it starts) reads beside this program,
        // which takes one of the reader places the demo keeps for onlookers.
        Process cam = Start(camera, "--consumers 1 --seconds 4 --fps 60 --width " + Width + " --height " + Height + " --name " + name);
        try
        {
            FrameReader reader = OpenWhenThere(name, TimeSpan.FromSeconds(30));
            Check(reader != null, "opened the camera's channel " + name);
            if (reader == null)
                return;
            using (reader)
            {
                byte[] expected = new byte[FrameLen];
                ulong previousStamp = 0, previousSeq = 0, previousTime = 0;
                int good = 0, timeouts = 0;
                string bad = null;
                Stopwatch clock = Stopwatch.StartNew();
                while (good < wanted && bad == null && timeouts < 10)
                {
                    using (Frame f = reader.WaitNext(Second))
                    {
                        if (f == null) { timeouts++; continue; }
                        bad = Verify(f, previousStamp, expected);
                        if (bad == null && (f.Seq <= previousSeq || f.TimestampNs < previousTime))
                            bad = "seq " + f.Seq + " after " + previousSeq + ", time " + f.TimestampNs + " after " + previousTime;
                        if (bad != null) break;
                        previousStamp = Stamp(f.Data);
                        previousSeq = f.Seq;
                        previousTime = f.TimestampNs;
                        good++;
                    }
                }
                Check(bad == null && good == wanted, "WaitNext: " + good + " of " + wanted + " camera frames " + Width + "x" + Height + " rgb24, each equal to render(stamp), stamp = tag, stamps/seq/timestamps increasing" + (bad == null ? "" : "; " + bad) + " (" + clock.ElapsedMilliseconds + " ms, last seq " + previousSeq + ")");

                Frame latest = null;
                for (int i = 0; i < 100 && latest == null; i++)
                {
                    latest = reader.Latest();
                    if (latest == null) Thread.Sleep(20);
                }
                using (latest)
                {
                    // Latest may return the frame taken last: not older, and intact.
                    string why = latest == null ? "none came" : Verify(latest, previousStamp - 1, expected);
                    Check(why == null, "Latest: the newest frame, intact" + (why == null ? " (seq " + latest.Seq + ")" : ": " + why));
                }
            }
        }
        finally
        {
            string output = Finish(cam, TimeSpan.FromSeconds(60));
            Check(cam.ExitCode == 0 && output.Contains("camera: published"), "camera process exited with 0 (" + cam.ExitCode + "), its consumer checked frames too: " + output.Replace('\n', ' ').Trim());
        }
    }

    static FrameReader OpenWhenThere(string name, TimeSpan within)
    {
        Stopwatch clock = Stopwatch.StartNew();
        while (true)
        {
            try
            {
                return FrameReader.Open(name);
            }
            catch (MmfException e)
            {
                if (e.Status != MmfStatus.NotFound || clock.Elapsed > within)
                    throw;
            }
            Thread.Sleep(50);
        }
    }

    // -----------------------------------------------------------------------------------------
    // (b) A C# writer; a Rust reader (the camera demo's consumer mode) and a C# reader in a
    // second mono process read it at the same time. Run twice: publishing copies (Publish),
    // and publishing in place (Begin/Commit, with the user header written in place too, and a
    // frame begun, scribbled over and abandoned after every committed one, which no reader
    // may ever see).

    static void ToRustAndCSharpReaders(string camera, bool inPlace)
    {
        Console.WriteLine(inPlace
            ? "== (b2) a C# writer publishing in place with user headers, frames abandoned between, read by a Rust process and a C# process"
            : "== (b) a C# writer, read by a Rust process and a C# process");
        string name = "mmf-cs-writer-" + (inPlace ? "inplace-" : "") + Process.GetCurrentProcess().Id;
        const int childFrames = 40;
        int headerLen = inPlace ? HeaderLen : 0;
        FrameWriter writer = inPlace
            ? FrameWriter.Create(name, FrameLen, new FrameSpec { MaxReaders = 4, UserHeaderLength = HeaderLen })
            : FrameWriter.Create(name, FrameLen, 4);
        using (writer)
        {
            ulong n = 0;
            int abandoned = 0;
            using (FrameReader local = FrameReader.Open(name))
            {
                Check(local.TryNext() == null, "TryNext before the first publish: null (no frame)");
                Check(local.Latest() == null, "Latest before the first publish: null");

                Process rust = Start(camera, "--consumer " + name + " --seconds 2");
                Process child = StartSelf("--read-frames " + name + " " + childFrames + " " + headerLen);
                byte[] frame = new byte[FrameLen];
                Stopwatch clock = Stopwatch.StartNew();
                // Publish at about 100 fps until both readers are done (or give up).
                while ((!rust.HasExited || !child.HasExited) && clock.Elapsed < TimeSpan.FromSeconds(60))
                {
                    n++;
                    ulong seq;
                    if (inPlace)
                    {
                        using (PendingFrame p = writer.Begin())
                        {
                            p.SetMeta(Width, Height, PixelFormats.Rgb24, n);
                            Render(n, (int)Width, (int)Height, p.Data.Slice(0, FrameLen));
                            RenderHeader(n, p.UserHeader);
                            seq = p.Commit(FrameLen);
                        }
                        // A frame no reader may see: a stamp and tag far ahead, bytes that are
                        // no render, a header that is no RenderHeader. Its slot is reused later.
                        using (PendingFrame junk = writer.Begin())
                        {
                            junk.SetMeta(Width, Height, PixelFormats.Rgb24, ulong.MaxValue);
                            junk.Data.Fill(0xee);
                            junk.UserHeader.Fill(0xee);
                            abandoned++;
                        }
                    }
                    else
                    {
                        Render(n, (int)Width, (int)Height, frame);
                        writer.SetMeta(Width, Height, PixelFormats.Rgb24, n);
                        seq = writer.Publish(frame);
                    }
                    if (seq != n)
                    {
                        Check(false, "Publish/Commit returned seq " + seq + " for frame " + n + " (abandoned frames use none)");
                        break;
                    }
                    if (n == 1)
                    {
                        using (Frame first = local.TryNext())
                        {
                            string why = first == null ? "none" : Verify(first, 0, new byte[FrameLen], headerLen);
                            Check(why == null && first.Seq == 1, "TryNext after the first publish: frame 1, intact" + (inPlace ? " with its user header" : "") + (why == null ? "" : ": " + why));
                        }
                    }
                    Thread.Sleep(10);
                }
                string rustOut = Finish(rust, TimeSpan.FromSeconds(10));
                string childOut = Finish(child, TimeSpan.FromSeconds(10));
                Check(rust.ExitCode == 0 && rustOut.Contains("report frames=") && !rustOut.Contains("report frames=0 "),
                    "Rust consumer (camera --consumer) read the C# frames, checking stamp = tag, and exited with " + rust.ExitCode + ": " + rustOut.Trim());
                Check(child.ExitCode == 0 && childOut.Contains("read " + childFrames + " frames"),
                    "second mono process read " + childFrames + " C# frames, each equal to render(stamp)" + (inPlace ? " with its own user header" : "") + ", exit " + child.ExitCode + ": " + childOut.Replace('\n', ' ').Trim());
                Console.WriteLine("     (published " + n + " frames" + (inPlace ? " in place, abandoned " + abandoned : "") + " in " + clock.ElapsedMilliseconds + " ms)");
            }

            Throws<MmfException>("Publish of a frame longer than the channel's maximum", () => writer.Publish(new byte[FrameLen + 1]), MmfStatus.TooLarge);

            using (FrameReader late = FrameReader.Open(name))
            {
                using (Frame last = late.WaitNext(Second))
                {
                    string why = last == null ? "none" : Verify(last, n - 1, new byte[FrameLen], headerLen);
                    Check(why == null && last.Seq == n, "a reader opened late: its first WaitNext is the newest frame, intact (" + (last == null ? "none" : last.Seq.ToString()) + (why == null ? "" : "; " + why) + ")");
                }
                Check(late.WriterAlive, "WriterAlive while the writer is open");
                writer.Dispose();
                Check(!late.WriterAlive, "WriterAlive is false once the writer closed");
                Throws<MmfException>("WaitNext after the writer closed", () => late.WaitNext(Second), MmfStatus.WriterGone);
            }
        }
    }

    /// The second mono process of (b): reads count frames and checks each (and its user
    /// header of headerLen bytes).
    static int ReadFramesChild(string name, int count, int headerLen)
    {
        byte[] expected = new byte[FrameLen];
        using (FrameReader reader = OpenWhenThere(name, TimeSpan.FromSeconds(30)))
        {
            ulong previous = 0;
            for (int i = 0; i < count; i++)
            {
                using (Frame f = reader.WaitNext(TimeSpan.FromSeconds(10)))
                {
                    string why = f == null ? "no frame within 10 s" : Verify(f, previous, expected, headerLen);
                    if (why != null)
                    {
                        Console.WriteLine("frame " + i + ": " + why);
                        return 1;
                    }
                    previous = f.Tag;
                }
            }
            Console.WriteLine("read " + count + " frames, last stamp " + previous);
        }
        return 0;
    }

    // -----------------------------------------------------------------------------------------
    // (c) Segments: a round trip through two handles, the write sequence, the write lock within
    // a process and across processes, and a lock holder killed (poisoning).

    static void SegmentRoundTrip()
    {
        Console.WriteLine("== (c) segments and the write lock");
        string name = "mmf-cs-seg-" + Process.GetCurrentProcess().Id;
        using (Segment seg = Segment.Create(name, 4096))
        using (Segment other = Segment.Open(name))
        using (Segment ro = Segment.OpenReadOnly(name))
        {
            Check(seg.Length == 4096 && other.Length == 4096, "Create 4096 bytes; Length " + seg.Length + " through both handles");
            Check(AllZero(other.Read(0, 4096)), "a new segment reads as zeros");

            byte[] hello = Encoding.UTF8.GetBytes("hello from C#");
            uint seen = ro.WriteSeq;
            seg.Write(1000, hello);
            Check(Equal(other.Read(1000, hello.Length), hello), "Write at 1000 through one handle, Read it back through another");
            Span<byte> into = new byte[hello.Length];
            ro.Read(1000, into);
            Check(into.SequenceEqual(hello), "Read into a Span through a read-only handle");
            uint? after = ro.WaitForWrite(seen, Second);
            Check(after != null && after.Value != seen, "WaitForWrite sees the write (" + seen + " -> " + after + ")");
            Check(ro.WaitForWrite(ro.WriteSeq, TimeSpan.FromMilliseconds(50)) == null, "WaitForWrite without a write: null after its timeout");
            Throws<MmfException>("Write through a read-only handle", () => ro.Write(0, hello));
            Throws<MmfException>("Read past the end", () => seg.Read(4090, 16));

            WriteLock stale;
            using (WriteLock l = seg.LockWrite(Second))
            {
                stale = l;
                Check(!l.WasPoisoned && l.Data.Length == 4096, "LockWrite: the whole data region in place (" + l.Data.Length + " bytes)");
                l.Data.Slice(2000, 4).Fill(0x5a);
                Throws<MmfException>("LockWrite through another handle while held", () => other.LockWrite(TimeSpan.FromMilliseconds(50)), MmfStatus.Timeout);
                Throws<MmfException>("Read through the holding handle", () => seg.Read(0, 1), MmfStatus.InvalidArgument);
                Throws<MmfException>("a second LockWrite through the holding handle", () => seg.LockWrite(TimeSpan.Zero), MmfStatus.InvalidArgument);
            }
            Check(Equal(other.Read(2000, 5), new byte[] { 0x5a, 0x5a, 0x5a, 0x5a, 0 }), "bytes written in place under the lock are seen after it");
            Throws<ObjectDisposedException>("WriteLock.Data after Dispose", () => { var d = stale.Data; });

            // Across processes: a mono child takes the lock; this process must wait for it,
            // then it is killed holding it, which poisons the segment.
            Process child = StartSelf("--lock-and-wait " + name);
            string line = child.StandardOutput.ReadLine();
            Check(line == "locked", "a second mono process took the write lock (" + line + ")");
            Throws<MmfException>("LockWrite while another process holds the lock", () => seg.LockWrite(TimeSpan.FromMilliseconds(100)), MmfStatus.Timeout);
            child.Kill();
            child.WaitForExit();
            using (WriteLock l = seg.LockWrite(TimeSpan.FromSeconds(5)))
            {
                Check(l.WasPoisoned, "LockWrite after the holder was killed: taken, and WasPoisoned");
                Check(seg.IsPoisoned, "IsPoisoned after the holder was killed");
                seg.ClearPoison();
                Check(!seg.IsPoisoned, "ClearPoison clears it");
            }
            Check(Equal(other.Read(1000, hello.Length), hello), "reads succeed again after ClearPoison");
        }
        Throws<MmfException>("Open after the creator closed its segment", () => Segment.Open(name).Dispose(), MmfStatus.NotFound);
    }

    /// The child of (c): takes the write lock, says so, and waits to be killed.
    static int LockAndWaitChild(string name)
    {
        Segment seg = Segment.Open(name);
        WriteLock l = seg.LockWrite(TimeSpan.FromSeconds(10));
        Console.WriteLine("locked");
        Console.Out.Flush();
        Thread.Sleep(TimeSpan.FromSeconds(60));
        GC.KeepAlive(l);
        GC.KeepAlive(seg);
        return 1; // not killed: the parent failed
    }

    // -----------------------------------------------------------------------------------------
    // (c2) The read lock: shared with readers through other handles and in another process,
    // exclusive of writers (Timeout), refused for a second lock through the same handle.

    static void ReadLocks()
    {
        Console.WriteLine("== (c2) segments: the read lock");
        string name = "mmf-cs-rlock-" + Process.GetCurrentProcess().Id;
        byte[] hello = Encoding.UTF8.GetBytes("read me in place");
        using (Segment seg = Segment.Create(name, 4096))
        using (Segment other = Segment.Open(name))
        using (Segment writer = Segment.Open(name))
        using (Segment ro = Segment.OpenReadOnly(name))
        {
            seg.Write(100, hello);
            ReadLock stale;
            using (ReadLock l = seg.LockRead(Second))
            {
                stale = l;
                Check(!l.WasPoisoned && l.Data.Length == 4096 && l.Data.Slice(100, hello.Length).SequenceEqual(hello),
                    "LockRead: the whole data region in place (" + l.Data.Length + " bytes), with what was written");
                using (ReadLock shared = other.LockRead(TimeSpan.FromMilliseconds(100)))
                    Check(shared.Data.Slice(100, hello.Length).SequenceEqual(hello), "LockRead through another handle while held: shared, same bytes");
                Throws<MmfException>("LockWrite through another handle while read-locked", () => writer.LockWrite(TimeSpan.FromMilliseconds(50)), MmfStatus.Timeout);
                Throws<MmfException>("LockWrite through the read-holding handle", () => seg.LockWrite(TimeSpan.Zero), MmfStatus.InvalidArgument);
                Throws<MmfException>("a second LockRead through the holding handle", () => seg.LockRead(TimeSpan.Zero), MmfStatus.InvalidArgument);
                Throws<MmfException>("Read through the read-holding handle", () => seg.Read(0, 1), MmfStatus.InvalidArgument);
            }
            Throws<ObjectDisposedException>("ReadLock.Data after Dispose", () => { var d = stale.Data; });
            stale.Dispose(); // twice is fine, and must not release someone else's lock
            using (WriteLock w = writer.LockWrite(Second))
            {
                Check(w.Data.Length == 4096, "LockWrite through another handle once the read locks are disposed");
                Throws<MmfException>("LockRead through another handle while write-locked", () => seg.LockRead(TimeSpan.FromMilliseconds(50)), MmfStatus.Timeout);
            }
            Throws<MmfException>("LockRead through a read-only handle", () => ro.LockRead(Second));

            // Across processes: a mono child holds the read lock until told to let go.
            Process child = StartSelf("--read-lock-and-wait " + name, true);
            string line = child.StandardOutput.ReadLine();
            Check(line == "locked " + hello.Length, "a second mono process took the read lock and read the bytes in place (" + line + ")");
            using (ReadLock l = seg.LockRead(TimeSpan.FromMilliseconds(500)))
                Check(l.Data[100] == hello[0], "LockRead while another process holds the read lock: shared");
            Throws<MmfException>("LockWrite while another process holds the read lock", () => writer.LockWrite(TimeSpan.FromMilliseconds(100)), MmfStatus.Timeout);
            child.StandardInput.WriteLine("go");
            child.StandardInput.Flush();
            string output = Finish(child, TimeSpan.FromSeconds(10));
            Check(child.ExitCode == 0 && output.Contains("unlocked"), "the child let go of its read lock and exited with " + child.ExitCode);
            using (WriteLock w = writer.LockWrite(Second))
                Check(!w.WasPoisoned, "LockWrite once the other process's read lock is disposed");
        }
    }

    /// The child of (c2): takes the read lock, checks the bytes (100.. "read me in place"), says
    /// so, and lets go when a line comes on standard input.
    static int ReadLockAndWaitChild(string name)
    {
        using (Segment seg = Segment.Open(name))
        {
            int same = 0;
            using (ReadLock l = seg.LockRead(TimeSpan.FromSeconds(10)))
            {
                byte[] want = Encoding.UTF8.GetBytes("read me in place");
                while (same < want.Length && l.Data[100 + same] == want[same])
                    same++;
                Console.WriteLine("locked " + same);
                Console.Out.Flush();
                Console.In.ReadLine();
            }
            Console.WriteLine("unlocked");
        }
        return 0;
    }

    // -----------------------------------------------------------------------------------------
    // (e) User headers within one process: short, absent, too long; channels without them.

    static void UserHeaders()
    {
        Console.WriteLine("== (e) user headers");
        string name = "mmf-cs-headers-" + Process.GetCurrentProcess().Id;
        using (FrameWriter w = FrameWriter.Create(name, 64, new FrameSpec { MaxReaders = 2, Slots = 6, UserHeaderLength = 16 }))
        using (FrameReader r = FrameReader.Open(name))
        {
            byte[] data = new byte[64];
            w.Publish(data, new byte[] { 1, 2, 3 });
            using (Frame f = r.WaitNext(Second))
                Check(f != null && f.UserHeader.SequenceEqual(new byte[] { 1, 2, 3, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0 }),
                    "Publish(data, 3-byte header): readers get the 16-byte header, zero-filled after the 3");
            w.Publish(data);
            Frame plain = r.WaitNext(Second);
            Check(plain != null && plain.UserHeader.Length == 16 && AllZero(plain.UserHeader.ToArray()), "Publish(data) without a header: 16 zero bytes");
            plain.Dispose();
            Throws<ObjectDisposedException>("Frame.UserHeader after Dispose", () => { var h = plain.UserHeader; });
            Throws<MmfException>("Publish with a header longer than the channel's", () => w.Publish(data, new byte[17]), MmfStatus.InvalidArgument);
            Check(r.TryNext() == null, "nothing was published by the refused Publish");
            using (PendingFrame p = w.Begin())
            {
                Check(p.UserHeader.Length == 16 && AllZero(p.UserHeader.ToArray()), "PendingFrame.UserHeader: 16 bytes, zeroed by Begin");
                Span<byte> header = p.UserHeader, bytes = p.Data;
                header[15] = 0x77;
                bytes[0] = 0x66;
                p.Commit(1);
            }
            using (Frame f = r.WaitNext(Second))
                Check(f != null && f.Length == 1 && f.Data[0] == 0x66 && f.UserHeader[15] == 0x77, "a header written in place arrives with its frame");
        }
        string bare = "mmf-cs-bare-" + Process.GetCurrentProcess().Id;
        using (FrameWriter w = FrameWriter.Create(bare, 64, new FrameSpec()))
        using (FrameReader r = FrameReader.Open(bare))
        {
            using (PendingFrame p = w.Begin())
            {
                Check(p.UserHeader.Length == 0, "a channel without user headers: PendingFrame.UserHeader is empty");
                p.Commit(0);
            }
            using (Frame f = r.WaitNext(Second))
                Check(f != null && f.UserHeader.Length == 0 && f.Length == 0, "... and Frame.UserHeader is empty (an empty frame)");
            Throws<MmfException>("Publish with a header on a channel without", () => w.Publish(new byte[1], new byte[1]), MmfStatus.InvalidArgument);
        }
        Throws<MmfException>("FrameSpec with Slots = 100 (above 62)", () => FrameWriter.Create(bare, 64, new FrameSpec { Slots = 100 }).Dispose(), MmfStatus.InvalidArgument);
        Throws<MmfException>("FrameSpec with UserHeaderLength = 4097", () => FrameWriter.Create(bare, 64, new FrameSpec { UserHeaderLength = 4097 }).Dispose(), MmfStatus.InvalidArgument);
        Throws<ArgumentOutOfRangeException>("FrameSpec with MaxReaders = -1", () => FrameWriter.Create(bare, 64, new FrameSpec { MaxReaders = -1 }).Dispose());
    }

    // -----------------------------------------------------------------------------------------
    // (f) FrameReader.OpenWait: a channel that never comes, and one created while it waits.

    static void OpenWait()
    {
        Console.WriteLine("== (f) FrameReader.OpenWait");
        string name = "mmf-cs-later-" + Process.GetCurrentProcess().Id;
        Stopwatch clock = Stopwatch.StartNew();
        Throws<MmfException>("OpenWait(300 ms) on a missing channel", () => FrameReader.OpenWait(name, TimeSpan.FromMilliseconds(300)).Dispose(), MmfStatus.Timeout);
        Check(clock.ElapsedMilliseconds >= 290, "... after waiting its timeout (" + clock.ElapsedMilliseconds + " ms)");

        FrameWriter writer = null;
        Exception failed = null;
        Thread creator = new Thread(() =>
        {
            try
            {
                Thread.Sleep(300);
                writer = FrameWriter.Create(name, 8, 2);
                writer.Publish(BitConverter.GetBytes(42UL));
            }
            catch (Exception e)
            {
                failed = e;
            }
        });
        clock.Restart();
        creator.Start();
        try
        {
            using (FrameReader r = FrameReader.OpenWait(name, TimeSpan.FromSeconds(10)))
            {
                long opened = clock.ElapsedMilliseconds;
                using (Frame f = r.WaitNext(TimeSpan.FromSeconds(5)))
                    Check(f != null && Stamp(f.Data) == 42 && opened >= 250 && opened < 9000,
                        "OpenWait opens a channel created 300 ms later (after " + opened + " ms) and reads its frame");
            }
        }
        finally
        {
            creator.Join();
            if (writer != null)
                writer.Dispose();
        }
        Check(failed == null, "the creating thread: " + (failed == null ? "ok" : failed.Message));
    }

    // -----------------------------------------------------------------------------------------
    // (d) Errors: status codes with the library's messages, and use after Dispose.

    static void Errors()
    {
        Console.WriteLine("== (d) errors");
        string missing = "mmf-cs-missing-" + Process.GetCurrentProcess().Id;
        MmfException e = Throws<MmfException>("FrameReader.Open of a missing channel", () => FrameReader.Open(missing), MmfStatus.NotFound);
        Check(e != null && e.Message.Contains(missing), "its message names the channel");
        e = Throws<MmfException>("Segment.Open of a missing segment", () => Segment.Open(missing), MmfStatus.NotFound);
        Check(e != null && e.Message.Contains(missing), "its message names the segment");
        Throws<MmfException>("Segment.Remove of a missing segment", () => Segment.Remove(missing), MmfStatus.NotFound);
        Throws<MmfException>("Segment.Create with a name containing '/'", () => Segment.Create("no/slash", 16), MmfStatus.InvalidArgument);
        Throws<ArgumentException>("a name containing NUL", () => Segment.Create("nul\0name", 16));

        string name = "mmf-cs-errors-" + Process.GetCurrentProcess().Id;
        using (Segment seg = Segment.Create(name, 64))
        {
            Throws<MmfException>("Segment.Create of an existing name", () => Segment.Create(name, 64), MmfStatus.AlreadyExists);
            Segment gone = Segment.Open(name);
            gone.Dispose();
            gone.Dispose(); // twice is fine
            Throws<ObjectDisposedException>("Segment.Length after Dispose", () => { var n = gone.Length; });
            Throws<ObjectDisposedException>("Segment.Read after Dispose", () => gone.Read(0, 1));
        }

        string channel = "mmf-cs-frames-" + Process.GetCurrentProcess().Id;
        using (FrameWriter w = FrameWriter.Create(channel, 64, 2))
        {
            FrameReader r = FrameReader.Open(channel);
            w.SetMeta(8, 1, 0, 0);
            w.Publish(new byte[64]);
            Frame f = r.WaitNext(Second);
            Check(f != null && f.Length == 64, "a 64-byte frame");
            f.Dispose();
            Throws<ObjectDisposedException>("Frame.Data after Dispose", () => { var d = f.Data; });
            Throws<ObjectDisposedException>("Frame.Seq after Dispose", () => { var s = f.Seq; });
            Throws<ArgumentOutOfRangeException>("a negative timeout", () => r.WaitNext(TimeSpan.FromSeconds(-2)));

            w.Publish(new byte[64]);
            Frame first = r.WaitNext(Second);
            ulong firstSeq = first == null ? 0 : first.Seq;
            w.Publish(new byte[64]);
            Frame second = r.WaitNext(Second);
            Check(first != null && second != null && second.Seq == firstSeq + 1, "two frames in a row");
            Throws<ObjectDisposedException>("a Frame after the reader took the next one", () => first.CopyTo(new byte[64]));
            r.Dispose();
            Throws<ObjectDisposedException>("a Frame after the reader's Dispose", () => second.ToArray());
            Throws<ObjectDisposedException>("FrameReader.TryNext after Dispose", () => r.TryNext());
            w.Dispose();
            Throws<ObjectDisposedException>("FrameWriter.Publish after Dispose", () => w.Publish(new byte[1]));
        }
    }

    // -----------------------------------------------------------------------------------------
    // (g) Ordering errors of publishing in place: each gives the exception documented.

    static void OrderingErrors()
    {
        Console.WriteLine("== (g) ordering errors of Begin/Commit");
        string name = "mmf-cs-order-" + Process.GetCurrentProcess().Id;
        FrameWriter w = FrameWriter.Create(name, 64, new FrameSpec { UserHeaderLength = 8 });
        using (w)
        using (FrameReader r = FrameReader.Open(name))
        {
            PendingFrame p = w.Begin();
            Check(p.Capacity == 64 && p.Data.Length == 64, "Begin: Data spans the channel's maximum frame length (" + p.Capacity + ")");
            Throws<MmfException>("Publish while a frame is pending", () => w.Publish(new byte[1]), MmfStatus.InvalidArgument);
            Throws<MmfException>("Publish with a header while a frame is pending", () => w.Publish(new byte[1], new byte[1]), MmfStatus.InvalidArgument);
            Throws<MmfException>("Begin while a frame is pending", () => w.Begin(), MmfStatus.InvalidArgument);
            Throws<ArgumentOutOfRangeException>("Commit(-1)", () => p.Commit(-1));
            Span<byte> pd = p.Data;
            pd[0] = 1;
            ulong seq = p.Commit(1);
            Check(seq == 1, "Commit after those refusals publishes the pending frame (seq " + seq + ")");
            Throws<ObjectDisposedException>("PendingFrame.Data after Commit", () => { var d = p.Data; });
            Throws<ObjectDisposedException>("Commit after Commit", () => p.Commit(1));
            p.Dispose(); // after Commit: nothing to abandon

            PendingFrame q = w.Begin();
            Span<byte> qd = q.Data;
            qd[0] = 2;
            q.Dispose();
            Throws<ObjectDisposedException>("Commit after Dispose", () => q.Commit(1));
            Throws<ObjectDisposedException>("PendingFrame.UserHeader after Dispose", () => { var h = q.UserHeader; });
            Throws<ObjectDisposedException>("PendingFrame.SetMeta after Dispose", () => q.SetMeta(1, 1, 0, 0));
            Check(w.Publish(new byte[] { 3 }) == 2, "Publish after an abandoned frame: the next seq (2), none used by the abandon");

            PendingFrame big = w.Begin();
            Throws<MmfException>("Commit(Capacity + 1)", () => big.Commit(65), MmfStatus.TooLarge);
            Throws<ObjectDisposedException>("PendingFrame.Data after a too-large Commit (the frame was abandoned)", () => { var d = big.Data; });
            using (PendingFrame again = w.Begin())
                Check(again.Commit(1) == 3, "Begin and Commit after a too-large Commit (seq 3)");

            ulong last = 0;
            for (Frame f = r.TryNext(); f != null; f = r.TryNext())
                using (f) last = f.Seq;
            Check(last == 3, "the reader's newest frame is seq 3: no abandoned frame was published (" + last + ")");

            PendingFrame orphan = w.Begin();
            w.Dispose();
            Throws<ObjectDisposedException>("PendingFrame.Data after the writer's Dispose", () => { var d = orphan.Data; });
            orphan.Dispose(); // the writer's close abandoned it already
            Throws<MmfException>("WaitNext after a writer closed with a frame pending", () => r.WaitNext(Second), MmfStatus.WriterGone);
        }
    }

    // -----------------------------------------------------------------------------------------

    static string OneLine(string s) { return s.Replace("\n", " ").Trim(); }

    static bool AllZero(byte[] a) { foreach (byte b in a) if (b != 0) return false; return true; }

    static bool Equal(byte[] a, byte[] b) { return new ReadOnlySpan<byte>(a).SequenceEqual(b); }

    static Process Start(string exe, string arguments, bool input = false)
    {
        var info = new ProcessStartInfo(exe, arguments)
        {
            UseShellExecute = false,
            RedirectStandardOutput = true,
            RedirectStandardInput = input,
        };
        Console.WriteLine("     $ " + exe + " " + arguments);
        return Process.Start(info);
    }

    /// This program again, as a child: under mono through the mono launcher, else (.NET's
    /// apphost) as the executable itself.
    static Process StartSelf(string arguments, bool input = false)
    {
        string self = Assembly.GetExecutingAssembly().Location;
        if (Type.GetType("Mono.Runtime") != null)
            return Start("mono", "\"" + self + "\" " + arguments, input);
        return Start(Process.GetCurrentProcess().MainModule.FileName, arguments, input);
    }

    /// Waits for p (killing it after within) and returns its standard output.
    static string Finish(Process p, TimeSpan within)
    {
        var output = p.StandardOutput.ReadToEndAsync();
        if (!p.WaitForExit((int)within.TotalMilliseconds))
        {
            p.Kill();
            p.WaitForExit();
        }
        return output.Result;
    }
}
