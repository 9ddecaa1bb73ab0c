//! The C functions called from Rust: status codes, null and foreign arguments, messages.

use super::*;
use std::ptr;

/// Calls one C function. The tests pass null, live handles of this library, or pointers to
/// locals that outlive the call; nulls and handles of the wrong kind are the errors under test.
macro_rules! c {
    ($call:expr) => {{
        // SAFETY: see the macro's documentation: every pointer is null, a live handle, or a
        // local valid for the call, which is all the functions' contracts ask.
        unsafe { $call }
    }};
}

fn empty_frame() -> MmfFrame {
    MmfFrame {
        data: ptr::null(),
        len: 0,
        seq: 0,
        timestamp_ns: 0,
        width: 0,
        height: 0,
        pixel_format: 0,
        tag: 0,
        user_header: ptr::null(),
        user_header_len: 0,
        reserved: 0,
    }
}

/// The user header of a frame the reader holds.
fn header(frame: &MmfFrame) -> &[u8] {
    // SAFETY: as for `bytes`: the header lives as long as the frame's data.
    unsafe { std::slice::from_raw_parts(frame.user_header, frame.user_header_len) }
}

/// The bytes of a frame the reader holds.
fn bytes(frame: &MmfFrame) -> &[u8] {
    // SAFETY: the tests call this only on a frame just taken and not yet released, whose
    // `data` points to `len` bytes pinned by the reader handle.
    unsafe { std::slice::from_raw_parts(frame.data, frame.len) }
}

fn cname(test: &str) -> CString {
    CString::new(format!("mmf-ffi-{test}-{}", std::process::id())).unwrap()
}

fn last_message() -> String {
    // SAFETY: never null, NUL-terminated, valid until the next failure on this thread.
    unsafe { CStr::from_ptr(mmf_last_error_message()) }
        .to_str()
        .unwrap()
        .to_string()
}

#[test]
fn null_arguments_are_invalid_not_crashes() {
    let name = cname("nulls");
    let mut seg: *mut MmfSegment = ptr::null_mut();
    {
        assert_eq!(
            c!(mmf_segment_create(ptr::null(), 64, &mut seg)),
            MMF_ERR_INVALID_ARGUMENT
        );
        assert!(
            last_message().contains("name is null"),
            "{}",
            last_message()
        );
        assert_eq!(
            c!(mmf_segment_create(name.as_ptr(), 64, ptr::null_mut())),
            MMF_ERR_INVALID_ARGUMENT
        );
        // The null out-pointer was caught before anything was created.
        assert_eq!(
            c!(mmf_segment_open(name.as_ptr(), &mut seg)),
            MMF_ERR_NOT_FOUND
        );
        let mut len = 0usize;
        assert_eq!(
            c!(mmf_segment_len(ptr::null_mut(), &mut len)),
            MMF_ERR_INVALID_ARGUMENT
        );
        assert!(last_message().contains("segment handle is null"));
        assert_eq!(c!(mmf_segment_close(ptr::null_mut())), MMF_OK);
        assert_eq!(c!(mmf_frame_writer_close(ptr::null_mut())), MMF_OK);
        assert_eq!(c!(mmf_frame_reader_close(ptr::null_mut())), MMF_OK);
        let mut frame = empty_frame();
        assert_eq!(
            c!(mmf_frame_reader_try_next(ptr::null_mut(), &mut frame)),
            MMF_ERR_INVALID_ARGUMENT
        );
        assert_eq!(
            c!(mmf_frame_writer_publish(
                ptr::null_mut(),
                ptr::null(),
                0,
                ptr::null_mut()
            )),
            MMF_ERR_INVALID_ARGUMENT
        );
    }
}

#[test]
fn segment_round_trip_and_status_codes() {
    let name = cname("segment");
    let mut seg: *mut MmfSegment = ptr::null_mut();
    {
        assert_eq!(
            c!(mmf_segment_create(name.as_ptr(), 4096, &mut seg)),
            MMF_OK
        );
        assert!(!seg.is_null());
        let mut again: *mut MmfSegment = ptr::null_mut();
        assert_eq!(
            c!(mmf_segment_create(name.as_ptr(), 4096, &mut again)),
            MMF_ERR_ALREADY_EXISTS
        );
        assert!(again.is_null(), "out must not be written on failure");
        assert!(
            last_message().contains("already exists"),
            "{}",
            last_message()
        );

        let mut len = 0usize;
        assert_eq!(c!(mmf_segment_len(seg, &mut len)), MMF_OK);
        assert_eq!(len, 4096);
        let mut seq0 = 0u32;
        assert_eq!(c!(mmf_segment_write_seq(seg, &mut seq0)), MMF_OK);

        let data = *b"hello from C";
        assert_eq!(
            c!(mmf_segment_write_at(seg, 100, data.as_ptr(), data.len())),
            MMF_OK
        );
        let mut back = [0u8; 12];
        assert_eq!(
            c!(mmf_segment_read_at(seg, 100, back.as_mut_ptr(), back.len())),
            MMF_OK
        );
        assert_eq!(back, data);
        assert_eq!(
            c!(mmf_segment_write_at(seg, 4090, data.as_ptr(), data.len())),
            MMF_ERR_INVALID_ARGUMENT
        );
        assert!(
            last_message().contains("out of bounds"),
            "{}",
            last_message()
        );
        assert_eq!(
            c!(mmf_segment_read_at(seg, 0, ptr::null_mut(), 4)),
            MMF_ERR_INVALID_ARGUMENT
        );

        let mut seq = 0u32;
        assert_eq!(
            c!(mmf_segment_wait_for_write(seg, seq0, 1000, &mut seq)),
            MMF_OK
        );
        assert_ne!(seq, seq0, "the write_at must have bumped the sequence");
        assert_eq!(
            c!(mmf_segment_wait_for_write(seg, seq, 10, &mut seq0)),
            MMF_ERR_TIMEOUT
        );

        let mut poisoned = true;
        assert_eq!(c!(mmf_segment_is_poisoned(seg, &mut poisoned)), MMF_OK);
        assert!(!poisoned);

        let mut ro: *mut MmfSegment = ptr::null_mut();
        assert_eq!(
            c!(mmf_segment_open_read_only(name.as_ptr(), &mut ro)),
            MMF_OK
        );
        assert_eq!(
            c!(mmf_segment_read_at(ro, 100, back.as_mut_ptr(), back.len())),
            MMF_OK
        );
        assert_eq!(back, data);
        assert_eq!(
            c!(mmf_segment_write_at(ro, 0, data.as_ptr(), 1)),
            MMF_ERR_OTHER
        );
        assert_eq!(c!(mmf_segment_close(ro)), MMF_OK);

        // Removing the name leaves open handles working. A later open no longer finds it on
        // POSIX; a Windows section's name lives as long as any handle (see
        // `mmf_segment_create`), so there the open succeeds.
        assert_eq!(c!(mmf_segment_remove(name.as_ptr())), MMF_OK);
        let mut gone: *mut MmfSegment = ptr::null_mut();
        let reopened = c!(mmf_segment_open(name.as_ptr(), &mut gone));
        if cfg!(windows) {
            assert_eq!(reopened, MMF_OK, "{}", last_message());
            assert_eq!(c!(mmf_segment_close(gone)), MMF_OK);
        } else {
            assert_eq!(reopened, MMF_ERR_NOT_FOUND);
        }
        assert_eq!(
            c!(mmf_segment_read_at(seg, 100, back.as_mut_ptr(), back.len())),
            MMF_OK
        );
        assert_eq!(back, data);
        assert_eq!(c!(mmf_segment_close(seg)), MMF_OK);
        assert_eq!(c!(mmf_segment_remove(name.as_ptr())), MMF_ERR_NOT_FOUND);
    }
}

#[test]
fn bad_names_and_sizes_are_invalid_arguments() {
    let mut seg: *mut MmfSegment = ptr::null_mut();
    let bad = CString::new("no/slashes").unwrap();
    let not_utf8 = [0xffu8, 0xfe, 0];
    {
        assert_eq!(
            c!(mmf_segment_create(bad.as_ptr(), 64, &mut seg)),
            MMF_ERR_INVALID_ARGUMENT
        );
        assert_eq!(
            c!(mmf_segment_create(not_utf8.as_ptr().cast(), 64, &mut seg)),
            MMF_ERR_INVALID_ARGUMENT
        );
        assert!(last_message().contains("UTF-8"));
        let name = cname("zero");
        assert_eq!(
            c!(mmf_segment_create(name.as_ptr(), 0, &mut seg)),
            MMF_ERR_INVALID_ARGUMENT
        );
        assert!(seg.is_null());
    }
}

#[test]
fn a_handle_of_another_kind_is_rejected() {
    let name = cname("kinds");
    let mut seg: *mut MmfSegment = ptr::null_mut();
    {
        assert_eq!(c!(mmf_segment_create(name.as_ptr(), 64, &mut seg)), MMF_OK);
        let as_writer = seg.cast::<MmfFrameWriter>();
        assert_eq!(
            c!(mmf_frame_writer_publish(
                as_writer,
                ptr::null(),
                0,
                ptr::null_mut()
            )),
            MMF_ERR_INVALID_ARGUMENT
        );
        assert!(
            last_message().contains("not a frame writer handle"),
            "{}",
            last_message()
        );
        assert_eq!(
            c!(mmf_frame_reader_close(seg.cast())),
            MMF_ERR_INVALID_ARGUMENT
        );
        assert_eq!(c!(mmf_segment_close(seg)), MMF_OK);
    }
}

#[test]
fn frames_round_trip_and_stay_pinned_until_released() {
    let name = cname("frames");
    let mut w: *mut MmfFrameWriter = ptr::null_mut();
    let mut r: *mut MmfFrameReader = ptr::null_mut();
    {
        assert_eq!(
            c!(mmf_frame_writer_create(name.as_ptr(), 64, 4, &mut w)),
            MMF_OK
        );
        assert_eq!(c!(mmf_frame_reader_open(name.as_ptr(), &mut r)), MMF_OK);
        let mut frame = empty_frame();
        assert_eq!(
            c!(mmf_frame_reader_try_next(r, &mut frame)),
            MMF_ERR_WOULD_BLOCK
        );
        assert_eq!(
            c!(mmf_frame_reader_wait_next(r, 10, &mut frame)),
            MMF_ERR_TIMEOUT
        );

        assert_eq!(
            c!(mmf_frame_writer_set_meta(w, 640, 480, 0x3231_5659, 7)),
            MMF_OK
        );
        let mut seq = 0u64;
        assert_eq!(
            c!(mmf_frame_writer_publish(w, b"one".as_ptr(), 3, &mut seq)),
            MMF_OK
        );
        assert_eq!(seq, 1);
        let big = [0u8; 65];
        assert_eq!(
            c!(mmf_frame_writer_publish(
                w,
                big.as_ptr(),
                big.len(),
                &mut seq
            )),
            MMF_ERR_TOO_LARGE
        );

        assert_eq!(c!(mmf_frame_reader_wait_next(r, 1000, &mut frame)), MMF_OK);
        assert_eq!(bytes(&frame), b"one");
        assert_eq!(
            (
                frame.seq,
                frame.width,
                frame.height,
                frame.pixel_format,
                frame.tag
            ),
            (1, 640, 480, 0x3231_5659, 7)
        );

        assert_eq!(
            c!(mmf_frame_writer_publish(
                w,
                b"two".as_ptr(),
                3,
                ptr::null_mut()
            )),
            MMF_OK
        );
        assert_eq!(
            c!(mmf_frame_writer_publish(
                w,
                b"three".as_ptr(),
                5,
                ptr::null_mut()
            )),
            MMF_OK
        );
        assert_eq!(c!(mmf_frame_reader_latest(r, &mut frame)), MMF_OK);
        assert_eq!(bytes(&frame), b"three");
        assert_eq!(frame.seq, 3);
        let mut alive = false;
        assert_eq!(c!(mmf_frame_reader_writer_alive(r, &mut alive)), MMF_OK);
        assert!(alive);
        assert_eq!(bytes(&frame), b"three", "asking leaves the frame pinned");
        assert_eq!(c!(mmf_frame_reader_release(r)), MMF_OK);
        assert_eq!(c!(mmf_frame_reader_release(r)), MMF_OK);

        assert_eq!(c!(mmf_frame_writer_close(w)), MMF_OK);
        assert_eq!(c!(mmf_frame_reader_writer_alive(r, &mut alive)), MMF_OK);
        assert!(!alive, "the writer closed the channel");
        assert_eq!(
            c!(mmf_frame_reader_writer_alive(r, ptr::null_mut())),
            MMF_ERR_INVALID_ARGUMENT
        );
        assert_eq!(c!(mmf_frame_reader_latest(r, &mut frame)), MMF_OK);
        assert_eq!(
            bytes(&frame),
            b"three",
            "latest keeps giving the last frame"
        );
        assert_eq!(
            c!(mmf_frame_reader_wait_next(r, 1000, &mut frame)),
            MMF_ERR_WRITER_GONE
        );
        assert_eq!(c!(mmf_frame_reader_close(r)), MMF_OK);
    }
}

#[test]
fn a_panic_becomes_a_status_not_an_unwind() {
    let status = call(|| panic!("boom"));
    assert_eq!(status, MMF_ERR_PANIC);
    assert!(last_message().contains("boom"), "{}", last_message());
}

#[test]
fn the_message_is_per_thread() {
    assert_eq!(
        c!(mmf_segment_remove(ptr::null())),
        MMF_ERR_INVALID_ARGUMENT
    );
    let other = std::thread::spawn(last_message).join().unwrap();
    assert_eq!(other, "");
    assert_eq!(last_message(), "name is null");
}

#[test]
fn the_write_lock_is_held_across_calls_until_unlocked_or_closed() {
    let name = cname("lock");
    let mut seg: *mut MmfSegment = ptr::null_mut();
    let mut other: *mut MmfSegment = ptr::null_mut();
    let mut data: *mut u8 = ptr::null_mut();
    let mut len = 0usize;
    assert_eq!(c!(mmf_segment_create(name.as_ptr(), 256, &mut seg)), MMF_OK);
    assert_eq!(c!(mmf_segment_open(name.as_ptr(), &mut other)), MMF_OK);
    assert_eq!(c!(mmf_segment_unlock_write(seg)), MMF_ERR_INVALID_ARGUMENT);
    assert_eq!(
        c!(mmf_segment_lock_write(seg, 1000, ptr::null_mut(), &mut len)),
        MMF_ERR_INVALID_ARGUMENT
    );

    assert_eq!(
        c!(mmf_segment_lock_write(seg, 1000, &mut data, &mut len)),
        MMF_OK
    );
    assert_eq!(len, 256);
    assert!(!data.is_null());
    // SAFETY: the handle holds the write lock, and `data` points to its `len` bytes.
    let region = unsafe { std::slice::from_raw_parts_mut(data, len) };
    region[..4].copy_from_slice(b"lock");
    // The holder's own lock-taking calls fail instead of waiting for themselves ...
    let mut buf = [0u8; 4];
    assert_eq!(
        c!(mmf_segment_read_at(seg, 0, buf.as_mut_ptr(), 4)),
        MMF_ERR_INVALID_ARGUMENT
    );
    assert!(
        last_message().contains("holds the write lock"),
        "{}",
        last_message()
    );
    assert_eq!(
        c!(mmf_segment_lock_write(seg, 10, &mut data, &mut len)),
        MMF_ERR_INVALID_ARGUMENT
    );
    // ... and another handle waits for the holder.
    let mut other_data: *mut u8 = ptr::null_mut();
    assert_eq!(
        c!(mmf_segment_lock_write(other, 20, &mut other_data, &mut len)),
        MMF_ERR_TIMEOUT
    );

    assert_eq!(c!(mmf_segment_unlock_write(seg)), MMF_OK);
    assert_eq!(
        c!(mmf_segment_read_at(other, 0, buf.as_mut_ptr(), 4)),
        MMF_OK
    );
    assert_eq!(&buf, b"lock");

    // Closing a handle that holds the lock releases it.
    assert_eq!(
        c!(mmf_segment_lock_write(
            other,
            1000,
            &mut other_data,
            &mut len
        )),
        MMF_OK
    );
    assert_eq!(c!(mmf_segment_close(other)), MMF_OK);
    assert_eq!(
        c!(mmf_segment_lock_write(seg, 1000, &mut data, &mut len)),
        MMF_OK
    );
    assert_eq!(c!(mmf_segment_close(seg)), MMF_OK);
}

#[test]
fn begin_commit_abandon_publish_in_place_and_refuse_out_of_order_calls() {
    let name = cname("begin");
    let mut w: *mut MmfFrameWriter = ptr::null_mut();
    let mut r: *mut MmfFrameReader = ptr::null_mut();
    let (mut data, mut cap, mut seq) = (ptr::null_mut::<u8>(), 0usize, 0u64);
    assert_eq!(
        c!(mmf_frame_writer_create(name.as_ptr(), 64, 2, &mut w)),
        MMF_OK
    );
    assert_eq!(c!(mmf_frame_reader_open(name.as_ptr(), &mut r)), MMF_OK);
    let mut frame = empty_frame();

    // Out of order: nothing begun.
    let (mut hdr, mut hdr_len) = (ptr::null_mut::<u8>(), 0usize);
    assert_eq!(
        c!(mmf_frame_writer_begun_user_header(
            w,
            &mut hdr,
            &mut hdr_len
        )),
        MMF_ERR_INVALID_ARGUMENT
    );
    assert_eq!(
        c!(mmf_frame_writer_commit(w, 1, &mut seq)),
        MMF_ERR_INVALID_ARGUMENT
    );
    assert!(
        last_message().contains("no frame begun"),
        "{}",
        last_message()
    );
    assert_eq!(c!(mmf_frame_writer_abandon(w)), MMF_ERR_INVALID_ARGUMENT);
    assert_eq!(
        c!(mmf_frame_writer_begin(w, ptr::null_mut(), &mut cap)),
        MMF_ERR_INVALID_ARGUMENT
    );
    assert_eq!(
        c!(mmf_frame_writer_begin(w, &mut data, ptr::null_mut())),
        MMF_ERR_INVALID_ARGUMENT
    );
    assert_eq!(
        c!(mmf_frame_writer_begin(ptr::null_mut(), &mut data, &mut cap)),
        MMF_ERR_INVALID_ARGUMENT
    );
    assert_eq!(
        c!(mmf_frame_writer_commit(ptr::null_mut(), 1, &mut seq)),
        MMF_ERR_INVALID_ARGUMENT
    );
    assert_eq!(
        c!(mmf_frame_writer_abandon(ptr::null_mut())),
        MMF_ERR_INVALID_ARGUMENT
    );

    // Begin, write in place, commit.
    assert_eq!(c!(mmf_frame_writer_begin(w, &mut data, &mut cap)), MMF_OK);
    assert_eq!(cap, 64);
    // SAFETY: the writer holds the begun frame, whose `cap` bytes start at `data`.
    let place = unsafe { std::slice::from_raw_parts_mut(data, cap) };
    place[..5].copy_from_slice(b"place");
    // While begun: a publish or a second begin is refused, the meta may still be set.
    assert_eq!(
        c!(mmf_frame_writer_publish(
            w,
            b"x".as_ptr(),
            1,
            ptr::null_mut()
        )),
        MMF_ERR_INVALID_ARGUMENT
    );
    assert!(
        last_message().contains("commit or abandon"),
        "{}",
        last_message()
    );
    assert_eq!(
        c!(mmf_frame_writer_publish_with_header(
            w,
            ptr::null(),
            0,
            b"x".as_ptr(),
            1,
            ptr::null_mut()
        )),
        MMF_ERR_INVALID_ARGUMENT
    );
    let mut data2 = ptr::null_mut::<u8>();
    assert_eq!(
        c!(mmf_frame_writer_begin(w, &mut data2, &mut cap)),
        MMF_ERR_INVALID_ARGUMENT
    );
    assert!(data2.is_null(), "a refused begin wrote its out-pointer");
    assert_eq!(c!(mmf_frame_writer_set_meta(w, 1, 2, 3, 4)), MMF_OK);
    // No user header on this channel: an empty one.
    let (mut hdr, mut hdr_len) = (ptr::null_mut::<u8>(), 99usize);
    assert_eq!(
        c!(mmf_frame_writer_begun_user_header(
            w,
            &mut hdr,
            &mut hdr_len
        )),
        MMF_OK
    );
    assert_eq!(hdr_len, 0);
    assert_eq!(
        c!(mmf_frame_reader_try_next(r, &mut frame)),
        MMF_ERR_WOULD_BLOCK,
        "a begun frame was visible before its commit"
    );
    assert_eq!(c!(mmf_frame_writer_commit(w, 5, &mut seq)), MMF_OK);
    assert_eq!(seq, 1);
    assert_eq!(
        c!(mmf_frame_writer_commit(w, 5, &mut seq)),
        MMF_ERR_INVALID_ARGUMENT
    );
    assert_eq!(c!(mmf_frame_reader_try_next(r, &mut frame)), MMF_OK);
    assert_eq!(bytes(&frame), b"place");
    assert_eq!(
        (
            frame.seq,
            frame.width,
            frame.height,
            frame.pixel_format,
            frame.tag
        ),
        (1, 1, 2, 3, 4)
    );
    assert_eq!(c!(mmf_frame_reader_release(r)), MMF_OK);

    // Abandoned and too long: nothing published, no sequence number used, slots come back.
    for round in 0..20 {
        assert_eq!(c!(mmf_frame_writer_begin(w, &mut data, &mut cap)), MMF_OK);
        // SAFETY: as above.
        unsafe { std::slice::from_raw_parts_mut(data, cap) }.fill(0xee);
        if round % 2 == 0 {
            assert_eq!(c!(mmf_frame_writer_abandon(w)), MMF_OK);
        } else {
            assert_eq!(
                c!(mmf_frame_writer_commit(w, 65, &mut seq)),
                MMF_ERR_TOO_LARGE
            );
            // The refused frame was abandoned with it.
            assert_eq!(c!(mmf_frame_writer_abandon(w)), MMF_ERR_INVALID_ARGUMENT);
        }
    }
    assert_eq!(
        c!(mmf_frame_reader_try_next(r, &mut frame)),
        MMF_ERR_WOULD_BLOCK,
        "an abandoned frame was published"
    );
    assert_eq!(
        c!(mmf_frame_writer_publish(w, b"next".as_ptr(), 4, &mut seq)),
        MMF_OK
    );
    assert_eq!(seq, 2);
    assert_eq!(c!(mmf_frame_reader_try_next(r, &mut frame)), MMF_OK);
    assert_eq!((frame.seq, bytes(&frame)), (2, &b"next"[..]));

    // Closing with a frame begun abandons it, and the readers hear the writer is gone.
    assert_eq!(c!(mmf_frame_writer_begin(w, &mut data, &mut cap)), MMF_OK);
    assert_eq!(c!(mmf_frame_writer_close(w)), MMF_OK);
    assert_eq!(
        c!(mmf_frame_reader_wait_next(r, 1000, &mut frame)),
        MMF_ERR_WRITER_GONE
    );
    assert_eq!(c!(mmf_frame_reader_close(r)), MMF_OK);
}

#[test]
fn create_with_a_spec_and_user_headers_travel_with_frames() {
    let name = cname("spec");
    let mut w: *mut MmfFrameWriter = ptr::null_mut();
    let mut r: *mut MmfFrameReader = ptr::null_mut();
    let spec = MmfFrameSpec {
        max_frame_len: 32,
        user_header_len: 16,
        ..MmfFrameSpec::default()
    };
    assert_eq!(
        c!(mmf_frame_writer_create_with(
            name.as_ptr(),
            ptr::null(),
            &mut w
        )),
        MMF_ERR_INVALID_ARGUMENT
    );
    assert!(
        last_message().contains("spec is null"),
        "{}",
        last_message()
    );
    assert_eq!(
        c!(mmf_frame_writer_create_with(ptr::null(), &spec, &mut w)),
        MMF_ERR_INVALID_ARGUMENT
    );
    assert_eq!(
        c!(mmf_frame_writer_create_with(
            name.as_ptr(),
            &spec,
            ptr::null_mut()
        )),
        MMF_ERR_INVALID_ARGUMENT
    );
    for bad in [
        MmfFrameSpec {
            max_frame_len: 0,
            ..spec
        },
        MmfFrameSpec {
            max_readers: 33,
            ..spec
        },
        MmfFrameSpec {
            user_header_len: 4097,
            ..spec
        },
        MmfFrameSpec { slots: 3, ..spec },
        MmfFrameSpec { slots: 63, ..spec },
    ] {
        assert_eq!(
            c!(mmf_frame_writer_create_with(name.as_ptr(), &bad, &mut w)),
            MMF_ERR_INVALID_ARGUMENT,
            "{bad:?}"
        );
    }
    assert!(w.is_null(), "a failed create wrote its out-pointer");
    assert_eq!(
        c!(mmf_frame_writer_create_with(name.as_ptr(), &spec, &mut w)),
        MMF_OK
    );
    assert_eq!(
        c!(mmf_frame_writer_create_with(name.as_ptr(), &spec, &mut w)),
        MMF_ERR_ALREADY_EXISTS
    );
    assert_eq!(c!(mmf_frame_reader_open(name.as_ptr(), &mut r)), MMF_OK);
    // Zeros asked for the defaults: 4 readers.
    let handle = c!(&*w);
    // SAFETY: a live writer handle with no frame begun, used from this thread only.
    assert_eq!(unsafe { handle.writer.as_ref() }.max_readers(), 4);

    let mut seq = 0u64;
    let mut frame = empty_frame();
    assert_eq!(
        c!(mmf_frame_writer_publish_with_header(
            w,
            b"hdr".as_ptr(),
            3,
            b"data".as_ptr(),
            4,
            &mut seq
        )),
        MMF_OK
    );
    assert_eq!(seq, 1);
    assert_eq!(c!(mmf_frame_reader_try_next(r, &mut frame)), MMF_OK);
    assert_eq!(bytes(&frame), b"data");
    assert_eq!(header(&frame), b"hdr\0\0\0\0\0\0\0\0\0\0\0\0\0");
    // A header longer than the channel's, a null header with a length, a frame too long:
    // refused, nothing published.
    assert_eq!(
        c!(mmf_frame_writer_publish_with_header(
            w,
            [1u8; 17].as_ptr(),
            17,
            b"x".as_ptr(),
            1,
            &mut seq
        )),
        MMF_ERR_INVALID_ARGUMENT
    );
    assert!(
        last_message().contains("user_header_len 16"),
        "{}",
        last_message()
    );
    assert_eq!(
        c!(mmf_frame_writer_publish_with_header(
            w,
            ptr::null(),
            1,
            b"x".as_ptr(),
            1,
            &mut seq
        )),
        MMF_ERR_INVALID_ARGUMENT
    );
    assert_eq!(
        c!(mmf_frame_writer_publish_with_header(
            w,
            b"h".as_ptr(),
            1,
            [0u8; 33].as_ptr(),
            33,
            &mut seq
        )),
        MMF_ERR_TOO_LARGE
    );
    assert_eq!(
        c!(mmf_frame_reader_try_next(r, &mut frame)),
        MMF_ERR_WOULD_BLOCK
    );
    // A full header, then a plain publish, which zeroes it.
    assert_eq!(
        c!(mmf_frame_writer_publish_with_header(
            w,
            [9u8; 16].as_ptr(),
            16,
            ptr::null(),
            0,
            ptr::null_mut()
        )),
        MMF_OK
    );
    assert_eq!(c!(mmf_frame_reader_try_next(r, &mut frame)), MMF_OK);
    assert_eq!((frame.len, header(&frame)), (0, &[9u8; 16][..]));
    assert_eq!(
        c!(mmf_frame_writer_publish(
            w,
            b"p".as_ptr(),
            1,
            ptr::null_mut()
        )),
        MMF_OK
    );
    assert_eq!(c!(mmf_frame_reader_try_next(r, &mut frame)), MMF_OK);
    assert_eq!(header(&frame), [0u8; 16]);
    // In place: the begun frame's header is zeroed, writable, and published with it.
    let (mut data, mut cap) = (ptr::null_mut::<u8>(), 0usize);
    let (mut hdr, mut hdr_len) = (ptr::null_mut::<u8>(), 0usize);
    assert_eq!(c!(mmf_frame_writer_begin(w, &mut data, &mut cap)), MMF_OK);
    assert_eq!(
        c!(mmf_frame_writer_begun_user_header(
            w,
            ptr::null_mut(),
            &mut hdr_len
        )),
        MMF_ERR_INVALID_ARGUMENT
    );
    assert_eq!(
        c!(mmf_frame_writer_begun_user_header(
            w,
            &mut hdr,
            &mut hdr_len
        )),
        MMF_OK
    );
    assert_eq!(hdr_len, 16);
    // SAFETY: the writer holds the begun frame, whose `hdr_len` header bytes start at `hdr`.
    let in_header = unsafe { std::slice::from_raw_parts_mut(hdr, hdr_len) };
    assert_eq!(in_header, [0u8; 16], "begin zeroes the user header");
    in_header.copy_from_slice(&[5; 16]);
    // SAFETY: as above, its `cap` frame bytes at `data`, which do not overlap the header.
    let in_frame = unsafe { std::slice::from_raw_parts_mut(data, cap) };
    in_frame[..2].copy_from_slice(b"ip");
    assert_eq!(c!(mmf_frame_writer_commit(w, 2, ptr::null_mut())), MMF_OK);
    assert_eq!(c!(mmf_frame_reader_try_next(r, &mut frame)), MMF_OK);
    assert_eq!(
        (bytes(&frame), header(&frame)),
        (&b"ip"[..], &[5u8; 16][..])
    );
    assert_eq!(c!(mmf_frame_writer_close(w)), MMF_OK);
    assert_eq!(c!(mmf_frame_reader_close(r)), MMF_OK);

    // Without a user header: length 0, a pointer that is not null.
    let name = cname("spec-nohdr");
    assert_eq!(
        c!(mmf_frame_writer_create(name.as_ptr(), 8, 1, &mut w)),
        MMF_OK
    );
    assert_eq!(c!(mmf_frame_reader_open(name.as_ptr(), &mut r)), MMF_OK);
    assert_eq!(
        c!(mmf_frame_writer_publish_with_header(
            w,
            b"h".as_ptr(),
            1,
            b"x".as_ptr(),
            1,
            &mut seq
        )),
        MMF_ERR_INVALID_ARGUMENT
    );
    assert_eq!(
        c!(mmf_frame_writer_publish_with_header(
            w,
            ptr::null(),
            0,
            b"x".as_ptr(),
            1,
            &mut seq
        )),
        MMF_OK
    );
    assert_eq!(c!(mmf_frame_reader_latest(r, &mut frame)), MMF_OK);
    assert_eq!(
        (frame.user_header_len, frame.user_header.is_null()),
        (0, false)
    );
    assert_eq!(c!(mmf_frame_writer_close(w)), MMF_OK);
    assert_eq!(c!(mmf_frame_reader_close(r)), MMF_OK);
}

#[test]
fn the_read_lock_is_held_across_calls_and_shared_with_other_readers() {
    let name = cname("rlock");
    let mut seg: *mut MmfSegment = ptr::null_mut();
    let mut other: *mut MmfSegment = ptr::null_mut();
    let mut data: *const u8 = ptr::null();
    let mut wdata: *mut u8 = ptr::null_mut();
    let mut len = 0usize;
    assert_eq!(c!(mmf_segment_create(name.as_ptr(), 128, &mut seg)), MMF_OK);
    assert_eq!(c!(mmf_segment_open(name.as_ptr(), &mut other)), MMF_OK);
    assert_eq!(
        c!(mmf_segment_write_at(seg, 0, b"read".as_ptr(), 4)),
        MMF_OK
    );

    // Out of order and nulls.
    assert_eq!(c!(mmf_segment_unlock_read(seg)), MMF_ERR_INVALID_ARGUMENT);
    assert!(
        last_message().contains("does not hold the read lock"),
        "{}",
        last_message()
    );
    assert_eq!(
        c!(mmf_segment_unlock_read(ptr::null_mut())),
        MMF_ERR_INVALID_ARGUMENT
    );
    assert_eq!(
        c!(mmf_segment_lock_read(seg, 1000, ptr::null_mut(), &mut len)),
        MMF_ERR_INVALID_ARGUMENT
    );
    assert_eq!(
        c!(mmf_segment_lock_read(seg, 1000, &mut data, ptr::null_mut())),
        MMF_ERR_INVALID_ARGUMENT
    );
    assert_eq!(
        c!(mmf_segment_lock_read(
            ptr::null_mut(),
            1000,
            &mut data,
            &mut len
        )),
        MMF_ERR_INVALID_ARGUMENT
    );

    assert_eq!(
        c!(mmf_segment_lock_read(seg, 1000, &mut data, &mut len)),
        MMF_OK
    );
    assert_eq!(len, 128);
    // SAFETY: the handle holds the read lock, and `data` points to its `len` bytes.
    let region = unsafe { std::slice::from_raw_parts(data, len) };
    assert_eq!(&region[..4], b"read");
    // Shared with another handle's read lock; a writer waits.
    let mut other_data: *const u8 = ptr::null();
    assert_eq!(
        c!(mmf_segment_lock_read(
            other,
            1000,
            &mut other_data,
            &mut len
        )),
        MMF_OK
    );
    // SAFETY: `other` holds the read lock too, and `other_data` points to its `len` bytes.
    let region = unsafe { std::slice::from_raw_parts(other_data, len) };
    assert_eq!(&region[..4], b"read");
    assert_eq!(c!(mmf_segment_unlock_read(other)), MMF_OK);
    assert_eq!(
        c!(mmf_segment_lock_write(other, 20, &mut wdata, &mut len)),
        MMF_ERR_TIMEOUT
    );
    // The holder's own lock-taking calls fail instead of waiting; the wrong unlock too.
    let mut buf = [0u8; 4];
    assert_eq!(
        c!(mmf_segment_read_at(seg, 0, buf.as_mut_ptr(), 4)),
        MMF_ERR_INVALID_ARGUMENT
    );
    assert!(
        last_message().contains("holds the read lock"),
        "{}",
        last_message()
    );
    assert_eq!(
        c!(mmf_segment_lock_read(seg, 10, &mut data, &mut len)),
        MMF_ERR_INVALID_ARGUMENT
    );
    assert_eq!(
        c!(mmf_segment_lock_write(seg, 10, &mut wdata, &mut len)),
        MMF_ERR_INVALID_ARGUMENT
    );
    assert_eq!(c!(mmf_segment_unlock_write(seg)), MMF_ERR_INVALID_ARGUMENT);
    assert_eq!(c!(mmf_segment_unlock_read(seg)), MMF_OK);
    assert_eq!(c!(mmf_segment_unlock_read(seg)), MMF_ERR_INVALID_ARGUMENT);

    // Under the write lock, unlock_read is the wrong unlock.
    assert_eq!(
        c!(mmf_segment_lock_write(seg, 1000, &mut wdata, &mut len)),
        MMF_OK
    );
    assert_eq!(c!(mmf_segment_unlock_read(seg)), MMF_ERR_INVALID_ARGUMENT);
    assert_eq!(
        c!(mmf_segment_lock_read(seg, 10, &mut data, &mut len)),
        MMF_ERR_INVALID_ARGUMENT
    );
    assert_eq!(
        c!(mmf_segment_lock_read(other, 20, &mut other_data, &mut len)),
        MMF_ERR_TIMEOUT
    );
    assert_eq!(c!(mmf_segment_unlock_write(seg)), MMF_OK);

    // Closing a handle that holds the read lock releases it.
    assert_eq!(
        c!(mmf_segment_lock_read(
            other,
            1000,
            &mut other_data,
            &mut len
        )),
        MMF_OK
    );
    assert_eq!(c!(mmf_segment_close(other)), MMF_OK);
    assert_eq!(
        c!(mmf_segment_lock_write(seg, 1000, &mut wdata, &mut len)),
        MMF_OK
    );
    assert_eq!(c!(mmf_segment_unlock_write(seg)), MMF_OK);

    // A read-only handle cannot take part in the lock word.
    let mut ro: *mut MmfSegment = ptr::null_mut();
    assert_eq!(
        c!(mmf_segment_open_read_only(name.as_ptr(), &mut ro)),
        MMF_OK
    );
    let status = c!(mmf_segment_lock_read(ro, 10, &mut data, &mut len));
    assert!(status < 0, "read lock on a read-only handle: {status}");
    assert_eq!(c!(mmf_segment_unlock_read(ro)), MMF_ERR_INVALID_ARGUMENT);
    assert_eq!(c!(mmf_segment_close(ro)), MMF_OK);
    assert_eq!(c!(mmf_segment_close(seg)), MMF_OK);
}

#[test]
fn open_wait_times_out_then_opens_a_channel_that_appears() {
    let name = cname("openwait");
    let mut r: *mut MmfFrameReader = ptr::null_mut();
    assert_eq!(
        c!(mmf_frame_reader_open_wait(ptr::null(), 10, &mut r)),
        MMF_ERR_INVALID_ARGUMENT
    );
    assert_eq!(
        c!(mmf_frame_reader_open_wait(
            name.as_ptr(),
            10,
            ptr::null_mut()
        )),
        MMF_ERR_INVALID_ARGUMENT
    );
    let started = std::time::Instant::now();
    assert_eq!(
        c!(mmf_frame_reader_open_wait(name.as_ptr(), 30, &mut r)),
        MMF_ERR_TIMEOUT
    );
    assert!(started.elapsed() >= Duration::from_millis(30));
    assert!(r.is_null());
    let creator = {
        let name = name.clone();
        std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(50));
            let mut w: *mut MmfFrameWriter = ptr::null_mut();
            assert_eq!(
                c!(mmf_frame_writer_create(name.as_ptr(), 8, 1, &mut w)),
                MMF_OK
            );
            assert_eq!(
                c!(mmf_frame_writer_publish(
                    w,
                    b"late".as_ptr(),
                    4,
                    ptr::null_mut()
                )),
                MMF_OK
            );
            // The handle itself is not Send: hand back its address.
            w as usize
        })
    };
    assert_eq!(
        c!(mmf_frame_reader_open_wait(name.as_ptr(), 10_000, &mut r)),
        MMF_OK
    );
    let w = creator.join().unwrap() as *mut MmfFrameWriter;
    let mut frame = empty_frame();
    assert_eq!(c!(mmf_frame_reader_wait_next(r, 1000, &mut frame)), MMF_OK);
    assert_eq!(bytes(&frame), b"late");
    assert_eq!(c!(mmf_frame_reader_close(r)), MMF_OK);
    assert_eq!(c!(mmf_frame_writer_close(w)), MMF_OK);
}

#[test]
fn wait_forever_waits_past_any_timeout_until_a_frame_comes() {
    let name = cname("forever");
    let mut w: *mut MmfFrameWriter = ptr::null_mut();
    assert_eq!(
        c!(mmf_frame_writer_create(name.as_ptr(), 64, 2, &mut w)),
        MMF_OK
    );
    // Opened with MMF_WAIT_FOREVER too: the channel is there, so it returns at once.
    let mut r: *mut MmfFrameReader = ptr::null_mut();
    assert_eq!(
        c!(mmf_frame_reader_open_wait(
            name.as_ptr(),
            MMF_WAIT_FOREVER,
            &mut r
        )),
        MMF_OK
    );
    // The reader handle moves to the waiting thread, which alone uses it until it is joined.
    let reader = r as usize;
    let waiter = std::thread::spawn(move || {
        let mut frame = empty_frame();
        let status = c!(mmf_frame_reader_wait_next(
            reader as *mut MmfFrameReader,
            MMF_WAIT_FOREVER,
            &mut frame
        ));
        (status, bytes(&frame).to_vec())
    });
    std::thread::sleep(std::time::Duration::from_millis(200));
    assert!(
        !waiter.is_finished(),
        "returned before any frame was published"
    );
    assert_eq!(
        c!(mmf_frame_writer_publish(
            w,
            b"late".as_ptr(),
            4,
            ptr::null_mut()
        )),
        MMF_OK
    );
    let (status, data) = waiter.join().unwrap();
    assert_eq!(status, MMF_OK, "{}", last_message());
    assert_eq!(data, b"late");
    assert_eq!(c!(mmf_frame_reader_close(r)), MMF_OK);
    assert_eq!(c!(mmf_frame_writer_close(w)), MMF_OK);
}
