/* The C side of tests/c_abi.rs: the test launches this program in one of three roles and
 * talks to it over stdin/stdout, one line per step, so that no frame can be lost to timing.
 * The exit code is the verdict: 0 passed, anything else failed (the reason is on stderr).
 *
 *   frames write NAME N    create channel NAME; publish frame k (1..N) on the k-th stdin line
 *   frames read NAME N     open channel NAME; print "want", take a frame, check it, N times
 *   frames segment NAME    open segment NAME, check the Rust side's bytes, write our own
 *                          with write_at and in place under the write lock
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "mmf.h"

#define CHECK(call)                                                                         \
    do {                                                                                    \
        int32_t status_ = (call);                                                           \
        if (status_ != MMF_OK) {                                                            \
            fprintf(stderr, "%s:%d: %s -> %d: %s\n", __FILE__, __LINE__, #call, status_,     \
                    mmf_last_error_message());                                              \
            exit(2);                                                                        \
        }                                                                                   \
    } while (0)

#define EXPECT(cond)                                                                        \
    do {                                                                                    \
        if (!(cond)) {                                                                      \
            fprintf(stderr, "%s:%d: expected %s\n", __FILE__, __LINE__, #cond);             \
            exit(3);                                                                        \
        }                                                                                   \
    } while (0)

/* Frame k: 100 + k bytes, byte i = (k * 31 + i) mod 256; the Rust side uses the same rule. */
static size_t frame_len(uint64_t k) { return (size_t)(100 + k); }
static uint8_t frame_byte(uint64_t k, size_t i) { return (uint8_t)((k * 31 + i) & 0xff); }

static int write_frames(const char *name, uint64_t n) {
    MmfFrameWriter *w = NULL;
    CHECK(mmf_frame_writer_create(name, 4096, 4, &w));
    printf("ready\n");
    fflush(stdout);
    uint8_t buf[4096];
    char line[64];
    for (uint64_t k = 1; k <= n; k++) {
        EXPECT(fgets(line, sizeof line, stdin) != NULL);
        for (size_t i = 0; i < frame_len(k); i++) buf[i] = frame_byte(k, i);
        CHECK(mmf_frame_writer_set_meta(w, (uint32_t)k, 480, 0x56595559u, k * 1000));
        uint64_t seq = 0;
        CHECK(mmf_frame_writer_publish(w, buf, frame_len(k), &seq));
        EXPECT(seq == k);
    }
    /* Stay alive until the reader is done: closing the writer would remove the channel. */
    EXPECT(fgets(line, sizeof line, stdin) != NULL);
    EXPECT(mmf_frame_writer_publish(w, buf, 4097, NULL) == MMF_ERR_TOO_LARGE);
    CHECK(mmf_frame_writer_close(w));
    return 0;
}

static int read_frames(const char *name, uint64_t n) {
    MmfFrameReader *r = NULL;
    CHECK(mmf_frame_reader_open(name, &r));
    MmfFrame frame;
    EXPECT(mmf_frame_reader_try_next(r, &frame) == MMF_ERR_WOULD_BLOCK);
    for (uint64_t k = 1; k <= n; k++) {
        printf("want\n");
        fflush(stdout);
        CHECK(mmf_frame_reader_wait_next(r, 5000, &frame));
        EXPECT(frame.seq == k);
        EXPECT(frame.len == frame_len(k));
        EXPECT(frame.width == k && frame.height == 480 && frame.tag == k * 1000);
        for (size_t i = 0; i < frame.len; i++) EXPECT(frame.data[i] == frame_byte(k, i));
        CHECK(mmf_frame_reader_release(r));
    }
    printf("done\n");
    fflush(stdout);
    int32_t status = mmf_frame_reader_wait_next(r, 5000, &frame);
    if (status != MMF_ERR_WRITER_GONE) {
        fprintf(stderr, "after the writer closed: %d (%s)\n", status, mmf_last_error_message());
        return 4;
    }
    CHECK(mmf_frame_reader_close(r));
    return 0;
}

static int segment(const char *name) {
    MmfSegment *seg = NULL;
    EXPECT(mmf_segment_open("mmf-ffi-c-no-such-segment", &seg) == MMF_ERR_NOT_FOUND);
    EXPECT(strlen(mmf_last_error_message()) > 0);
    EXPECT(seg == NULL);
    EXPECT(mmf_segment_open(NULL, &seg) == MMF_ERR_INVALID_ARGUMENT);
    CHECK(mmf_segment_open(name, &seg));
    size_t len = 0;
    CHECK(mmf_segment_len(seg, &len));
    EXPECT(len == 8192);
    uint8_t buf[256];
    CHECK(mmf_segment_read_at(seg, 1000, buf, sizeof buf));
    for (size_t i = 0; i < sizeof buf; i++) EXPECT(buf[i] == (uint8_t)(i ^ 0x5a));
    for (size_t i = 0; i < sizeof buf; i++) buf[i] = (uint8_t)(255 - i);
    CHECK(mmf_segment_write_at(seg, 4000, buf, sizeof buf));
    EXPECT(mmf_segment_write_at(seg, 8000, buf, sizeof buf) == MMF_ERR_INVALID_ARGUMENT);
    /* In place under the write lock: the last 8 bytes of the region. */
    uint8_t *data = NULL;
    size_t data_len = 0;
    CHECK(mmf_segment_lock_write(seg, 5000, &data, &data_len));
    EXPECT(data_len == 8192);
    memcpy(data + data_len - 8, "locked!", 8);
    CHECK(mmf_segment_unlock_write(seg));
    CHECK(mmf_segment_close(seg));
    return 0;
}

int main(int argc, char **argv) {
    if (argc == 4 && strcmp(argv[1], "write") == 0) return write_frames(argv[2], strtoull(argv[3], NULL, 10));
    if (argc == 4 && strcmp(argv[1], "read") == 0) return read_frames(argv[2], strtoull(argv[3], NULL, 10));
    if (argc == 3 && strcmp(argv[1], "segment") == 0) return segment(argv[2]);
    fprintf(stderr, "usage: frames write|read NAME N | frames segment NAME\n");
    return 1;
}
