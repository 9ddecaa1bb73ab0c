/* The C side of tests/c_abi.rs: the test launches this program in one of its roles and
 * talks to it over stdin/stdout, one line per step, so that no frame can be lost to timing.
 * The exit code is the verdict: 0 passed, anything else failed (the reason is on stderr).
 *
 *   frames write NAME N    create channel NAME (16-byte user headers); publish frame k
 *                          (1..N) on the k-th stdin line: odd k with a copy and its user
 *                          header, even k and its header in place (begin/commit), after
 *                          abandoning a frame and refusing a too long commit every fourth
 *   frames read NAME N     open channel NAME (waiting for it); print "want", take a frame,
 *                          check it and its user header, N times
 *   frames segment NAME    open segment NAME, check the creator's bytes (also under the read
 *                          lock), write our own with write_at and in place under the write lock
 *   frames segmaker NAME   create segment NAME with the bytes `segment` checks, print "ready",
 *                          and on a stdin line check the bytes `segment` wrote
 */
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "mmf.h"

/* The layout mmf.h promises for MmfFrame, as this compiler lays it out (C99 has no
 * _Static_assert: a negative array size fails the build instead). */
#define WORD sizeof(void *)
typedef char frame_data_offset_is_24[offsetof(MmfFrame, data) == 24 ? 1 : -1];
typedef char frame_width_offset[offsetof(MmfFrame, width) == 24 + 4 * WORD ? 1 : -1];
typedef char frame_size[sizeof(MmfFrame) == 24 + 4 * WORD + 16 ? 1 : -1];

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

/* The user header of frame k (HEADER_LEN bytes): "hdr" (odd k, published with a copy) or
 * "inp" (even k, written in place), then k's low byte, then zeros. */
#define HEADER_LEN 16
static uint8_t header_byte(uint64_t k, size_t i) {
    const char *tag = k % 2 == 1 ? "hdr" : "inp";
    if (i >= 4) return 0;
    return i == 3 ? (uint8_t)k : (uint8_t)tag[i];
}

/* Segment bytes: the creator's at 1000, the opener's at 4000, and "locked!" at the end. */
#define SEGMENT_LEN 8192
static uint8_t creator_byte(size_t i) { return (uint8_t)(i ^ 0x5a); }
static uint8_t opener_byte(size_t i) { return (uint8_t)(255 - i); }

static int write_frames(const char *name, uint64_t n) {
    MmfFrameWriter *w = NULL;
    MmfFrameSpec spec = {0};
    spec.max_frame_len = 4096;
    spec.user_header_len = HEADER_LEN;
    EXPECT(mmf_frame_writer_create_with(name, NULL, &w) == MMF_ERR_INVALID_ARGUMENT);
    CHECK(mmf_frame_writer_create_with(name, &spec, &w));
    printf("ready\n");
    fflush(stdout);
    static uint8_t buf[4097];
    char line[64];
    EXPECT(mmf_frame_writer_commit(w, 1, NULL) == MMF_ERR_INVALID_ARGUMENT);
    EXPECT(mmf_frame_writer_abandon(w) == MMF_ERR_INVALID_ARGUMENT);
    for (uint64_t k = 1; k <= n; k++) {
        EXPECT(fgets(line, sizeof line, stdin) != NULL);
        uint64_t seq = 0;
        uint8_t *data = NULL;
        size_t capacity = 0;
        if (k % 4 == 0) {
            /* Scribbled over, then dropped or refused: readers never see these bytes. */
            CHECK(mmf_frame_writer_begin(w, &data, &capacity));
            memset(data, 0xee, capacity);
            EXPECT(mmf_frame_writer_publish(w, buf, 1, NULL) == MMF_ERR_INVALID_ARGUMENT);
            CHECK(mmf_frame_writer_abandon(w));
            CHECK(mmf_frame_writer_begin(w, &data, &capacity));
            memset(data, 0xee, capacity);
            EXPECT(mmf_frame_writer_commit(w, capacity + 1, NULL) == MMF_ERR_TOO_LARGE);
        }
        CHECK(mmf_frame_writer_set_meta(w, (uint32_t)k, 480, 0x56595559u, k * 1000));
        if (k % 2 == 1) {
            uint8_t header[HEADER_LEN];
            for (size_t i = 0; i < HEADER_LEN; i++) header[i] = header_byte(k, i);
            for (size_t i = 0; i < frame_len(k); i++) buf[i] = frame_byte(k, i);
            CHECK(mmf_frame_writer_publish_with_header(w, header, 4, buf, frame_len(k), &seq));
        } else {
            CHECK(mmf_frame_writer_begin(w, &data, &capacity));
            EXPECT(capacity == 4096);
            uint8_t *header = NULL;
            size_t header_len = 0;
            CHECK(mmf_frame_writer_begun_user_header(w, &header, &header_len));
            EXPECT(header_len == HEADER_LEN);
            for (size_t i = 0; i < HEADER_LEN; i++) EXPECT(header[i] == 0);
            for (size_t i = 0; i < 4; i++) header[i] = header_byte(k, i);
            for (size_t i = 0; i < frame_len(k); i++) data[i] = frame_byte(k, i);
            CHECK(mmf_frame_writer_commit(w, frame_len(k), &seq));
        }
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
    CHECK(mmf_frame_reader_open_wait(name, 10000, &r));
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
        EXPECT(frame.user_header != NULL && frame.user_header_len == HEADER_LEN);
        for (size_t i = 0; i < HEADER_LEN; i++) EXPECT(frame.user_header[i] == header_byte(k, i));
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
    EXPECT(len == SEGMENT_LEN);
    uint8_t buf[256];
    CHECK(mmf_segment_read_at(seg, 1000, buf, sizeof buf));
    for (size_t i = 0; i < sizeof buf; i++) EXPECT(buf[i] == creator_byte(i));
    /* In place under the read lock, which the handle keeps until unlocked. */
    const uint8_t *view = NULL;
    size_t view_len = 0;
    EXPECT(mmf_segment_unlock_read(seg) == MMF_ERR_INVALID_ARGUMENT);
    CHECK(mmf_segment_lock_read(seg, 5000, &view, &view_len));
    EXPECT(view_len == SEGMENT_LEN);
    for (size_t i = 0; i < sizeof buf; i++) EXPECT(view[1000 + i] == creator_byte(i));
    EXPECT(mmf_segment_read_at(seg, 1000, buf, sizeof buf) == MMF_ERR_INVALID_ARGUMENT);
    EXPECT(mmf_segment_unlock_write(seg) == MMF_ERR_INVALID_ARGUMENT);
    CHECK(mmf_segment_unlock_read(seg));
    for (size_t i = 0; i < sizeof buf; i++) buf[i] = opener_byte(i);
    CHECK(mmf_segment_write_at(seg, 4000, buf, sizeof buf));
    EXPECT(mmf_segment_write_at(seg, 8000, buf, sizeof buf) == MMF_ERR_INVALID_ARGUMENT);
    /* In place under the write lock: the last 8 bytes of the region. */
    uint8_t *data = NULL;
    size_t data_len = 0;
    CHECK(mmf_segment_lock_write(seg, 5000, &data, &data_len));
    EXPECT(data_len == SEGMENT_LEN);
    memcpy(data + data_len - 8, "locked!", 8);
    CHECK(mmf_segment_unlock_write(seg));
    CHECK(mmf_segment_close(seg));
    return 0;
}

static int segment_maker(const char *name) {
    MmfSegment *seg = NULL;
    CHECK(mmf_segment_create(name, SEGMENT_LEN, &seg));
    uint8_t buf[256];
    for (size_t i = 0; i < sizeof buf; i++) buf[i] = creator_byte(i);
    CHECK(mmf_segment_write_at(seg, 1000, buf, sizeof buf));
    printf("ready\n");
    fflush(stdout);
    char line[64];
    EXPECT(fgets(line, sizeof line, stdin) != NULL);
    CHECK(mmf_segment_read_at(seg, 4000, buf, sizeof buf));
    for (size_t i = 0; i < sizeof buf; i++) EXPECT(buf[i] == opener_byte(i));
    CHECK(mmf_segment_read_at(seg, SEGMENT_LEN - 8, buf, 8));
    EXPECT(memcmp(buf, "locked!", 8) == 0);
    CHECK(mmf_segment_close(seg));
    return 0;
}

int main(int argc, char **argv) {
    if (mmf_abi_version() != MMF_ABI_VERSION) {
        fprintf(stderr, "libmmf_ffi has ABI version %u, mmf.h says %u\n",
                (unsigned)mmf_abi_version(), (unsigned)MMF_ABI_VERSION);
        return 4;
    }
    if (argc == 4 && strcmp(argv[1], "write") == 0) return write_frames(argv[2], strtoull(argv[3], NULL, 10));
    if (argc == 4 && strcmp(argv[1], "read") == 0) return read_frames(argv[2], strtoull(argv[3], NULL, 10));
    if (argc == 3 && strcmp(argv[1], "segment") == 0) return segment(argv[2]);
    if (argc == 3 && strcmp(argv[1], "segmaker") == 0) return segment_maker(argv[2]);
    fprintf(stderr, "usage: frames write|read NAME N | frames segment|segmaker NAME\n");
    return 1;
}
