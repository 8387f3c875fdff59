/* Concurrency through the C ABI (tests/aot.rs builds bert_tiny with batch 1..3 and seq
   7..16): eight threads, each with its own session over the one linked model, run 200
   times at mixed shapes, and every output must be bit-identical to the serial run of the
   same shape. Exit code 0 when every run matched. */
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "bert.h"

#define THREADS 8
#define RUNS 200
#define SHAPES 4
static const int64_t shapes[SHAPES][2] = {{1, 7}, {3, 16}, {2, 9}, {1, 16}};
static float *expected[SHAPES];
static size_t expected_n[SHAPES];

/* Runs `s` at shape k; returns the output (malloc'd) and its length, or NULL. */
static float *run_shape(kiln_session *s, int k, size_t *len) {
    int64_t batch = shapes[k][0], seq = shapes[k][1];
    int64_t shape[2] = {batch, seq};
    size_t n = (size_t)(batch * seq);
    int64_t *ids = malloc(n * sizeof *ids), *mask = malloc(n * sizeof *mask),
            *types = malloc(n * sizeof *types);
    for (size_t i = 0; i < n; i++) {
        ids[i] = (int64_t)((i * 11 + (size_t)k) % 50);
        mask[i] = (i % 5 != 4);
        types[i] = (int64_t)(i % 2);
    }
    const void *inputs[3] = {ids, mask, types};
    const int64_t *in_shapes[3] = {shape, shape, shape};
    int64_t out_shape[3];
    float *out = NULL;
    if (bert_output_shape(s, in_shapes, 0, out_shape) == 0) {
        *len = (size_t)(out_shape[0] * out_shape[1] * out_shape[2]);
        out = malloc(*len * sizeof *out);
        void *outputs[1] = {out};
        if (bert_run(s, inputs, in_shapes, outputs) != 0) {
            fprintf(stderr, "run: %s\n", bert_last_error(s));
            free(out);
            out = NULL;
        }
    }
    free(ids);
    free(mask);
    free(types);
    return out;
}

static void *worker(void *arg) {
    intptr_t t = (intptr_t)arg;
    kiln_session *s = NULL;
    char error[512];
    if (bert_open(NULL, 1, &s, error, sizeof error) != 0) {
        fprintf(stderr, "thread %ld: open: %s\n", (long)t, error);
        return (void *)1;
    }
    intptr_t bad = 0;
    for (int r = 0; r < RUNS; r++) {
        int k = (int)((r + t) % SHAPES);
        size_t len = 0;
        float *out = run_shape(s, k, &len);
        if (!out || len != expected_n[k] || memcmp(out, expected[k], len * sizeof *out) != 0) {
            bad++;
        }
        free(out);
    }
    bert_close(s);
    return (void *)bad;
}

int main(void) {
    kiln_session *s = NULL;
    char error[512];
    if (bert_open(NULL, 1, &s, error, sizeof error) != 0) {
        fprintf(stderr, "open: %s\n", error);
        return 1;
    }
    for (int k = 0; k < SHAPES; k++) {
        expected[k] = run_shape(s, k, &expected_n[k]);
        if (!expected[k]) return 1;
    }
    bert_close(s);
    pthread_t threads[THREADS];
    for (intptr_t t = 0; t < THREADS; t++) {
        if (pthread_create(&threads[t], NULL, worker, (void *)t) != 0) return 1;
    }
    long mismatches = 0;
    for (int t = 0; t < THREADS; t++) {
        void *bad = NULL;
        pthread_join(threads[t], &bad);
        mismatches += (long)(intptr_t)bad;
    }
    printf("%d runs on %d threads, %ld differed from the serial runs\n", THREADS * RUNS,
           THREADS, mismatches);
    return mismatches == 0 ? 0 : 1;
}
