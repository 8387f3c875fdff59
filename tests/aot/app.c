/* Links a kiln object and its header (tests/aot.rs builds bert_tiny with batch 1..3 and
   seq 7..16): runs the model at two shapes, writes each output's raw f32 bytes to
   OUT_DIR/out_BxS.bin, and checks that bad input gives an error code and a message.
   Exit code 0 when every check held. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "bert.h"

static int run_at(kiln_session *s, int64_t batch, int64_t seq, const char *out_dir) {
    int64_t shape[2] = {batch, seq};
    size_t n = (size_t)(batch * seq);
    int64_t *ids = malloc(n * sizeof *ids), *mask = malloc(n * sizeof *mask),
            *types = malloc(n * sizeof *types);
    for (size_t i = 0; i < n; i++) {
        ids[i] = (int64_t)((i * 7 + 3) % 50);
        mask[i] = 1;
        types[i] = 0;
    }
    const void *inputs[3] = {ids, mask, types};
    const int64_t *shapes[3] = {shape, shape, shape};
    int64_t out_shape[3];
    int rc = bert_output_shape(s, shapes, 0, out_shape);
    if (rc != 0) {
        fprintf(stderr, "output_shape: %d %s\n", rc, bert_last_error(s));
        return 1;
    }
    int64_t declared[3];
    bert_output0_shape(batch, seq, declared);
    if (memcmp(declared, out_shape, sizeof declared) != 0) {
        fprintf(stderr, "the header's shape function disagrees with the runtime\n");
        return 1;
    }
    size_t out_n = (size_t)(out_shape[0] * out_shape[1] * out_shape[2]);
    float *out = malloc(out_n * sizeof *out);
    void *outputs[1] = {out};
    rc = bert_run(s, inputs, shapes, outputs);
    if (rc != 0) {
        fprintf(stderr, "run: %d %s\n", rc, bert_last_error(s));
        return 1;
    }
    char path[4096];
    snprintf(path, sizeof path, "%s/out_%lldx%lld.bin", out_dir, (long long)batch, (long long)seq);
    FILE *f = fopen(path, "wb");
    if (!f || fwrite(out, sizeof *out, out_n, f) != out_n) return 1;
    fclose(f);
    if (bert_workspace_size(batch, seq) == 0) {
        fprintf(stderr, "no workspace size for %lldx%lld\n", (long long)batch, (long long)seq);
        return 1;
    }
    free(ids); free(mask); free(types); free(out);
    return 0;
}

int main(int argc, char **argv) {
    if (argc != 2) return 2;
    kiln_session *s = NULL;
    char error[512];
    if (bert_open(NULL, 2, &s, error, sizeof error) != 0) {
        fprintf(stderr, "open: %s\n", error);
        return 1;
    }
    if (run_at(s, 1, 7, argv[1]) || run_at(s, 3, 16, argv[1])) return 1;

    /* seq 40 is outside the declared range: an error code and a message, no crash. */
    int64_t bad[2] = {1, 40};
    int64_t ids[40] = {0};
    const void *inputs[3] = {ids, ids, ids};
    const int64_t *shapes[3] = {bad, bad, bad};
    float out[40 * 64];
    void *outputs[1] = {out};
    int rc = bert_run(s, inputs, shapes, outputs);
    if (rc != 1 || strlen(bert_last_error(s)) == 0) {
        fprintf(stderr, "expected an input error for seq 40, got %d\n", rc);
        return 1;
    }
    printf("seq 40 refused: %s\n", bert_last_error(s));

    /* A null input buffer is refused, not read. */
    int64_t ok_shape[2] = {1, 8};
    const void *nulls[3] = {NULL, NULL, NULL};
    const int64_t *ok_shapes[3] = {ok_shape, ok_shape, ok_shape};
    rc = bert_run(s, nulls, ok_shapes, outputs);
    if (rc != 1) {
        fprintf(stderr, "expected an input error for null inputs, got %d\n", rc);
        return 1;
    }
    printf("null input refused: %s\n", bert_last_error(s));
    bert_close(s);
    return 0;
}
