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
    }
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

        // Removing the name leaves open handles working; a later open no longer finds it.
        assert_eq!(c!(mmf_segment_remove(name.as_ptr())), MMF_OK);
        let mut gone: *mut MmfSegment = ptr::null_mut();
        assert_eq!(
            c!(mmf_segment_open(name.as_ptr(), &mut gone)),
            MMF_ERR_NOT_FOUND
        );
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
        assert_eq!(c!(mmf_frame_reader_release(r)), MMF_OK);
        assert_eq!(c!(mmf_frame_reader_release(r)), MMF_OK);

        assert_eq!(c!(mmf_frame_writer_close(w)), MMF_OK);
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
