/* The C implementation of slimcore_native.h: the reference build for CPUs and CI.
 * Rows are spread over threads with OpenMP; arithmetic is float32, as in the CUDA build. */
#include "slimcore_native.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

static inline float bf16_to_float(uint16_t b) {
    uint32_t u = (uint32_t)b << 16;
    float f;
    memcpy(&f, &u, sizeof f);
    return f;
}

static inline uint16_t float_to_bf16(float f) {
    uint32_t u;
    memcpy(&u, &f, sizeof u);
    if ((u & 0x7fffffffu) > 0x7f800000u) return (uint16_t)((u >> 16) | 0x40u); /* quiet NaN */
    u += 0x7fffu + ((u >> 16) & 1u); /* round to nearest, ties to even, as PyTorch does */
    return (uint16_t)(u >> 16);
}

static inline float load(const void *p, int dtype, int64_t i) {
    return dtype == SLIMCORE_F32 ? ((const float *)p)[i] : bf16_to_float(((const uint16_t *)p)[i]);
}

static inline void store(void *p, int dtype, int64_t i, float v) {
    if (dtype == SLIMCORE_F32) ((float *)p)[i] = v;
    else ((uint16_t *)p)[i] = float_to_bf16(v);
}

static int bad_dtype(int dtype) { return dtype != SLIMCORE_F32 && dtype != SLIMCORE_BF16; }

#include "slimcore_common.inc"

int slimcore_cross_entropy(const void *logits, void *grad, int dtype, const int64_t *targets,
                           int64_t rows, int64_t vocab, int64_t ignore_index, float *loss,
                           int64_t *correct, void *stream) {
    (void)stream;
    if (!logits || !targets || !loss || !correct || rows < 1 || vocab < 1 || bad_dtype(dtype))
        return SLIMCORE_BAD_ARGUMENT;
    int64_t hits = 0;
#pragma omp parallel for reduction(+ : hits) schedule(static)
    for (int64_t r = 0; r < rows; r++) {
        const int64_t base = r * vocab;
        const int64_t target = targets[r];
        if (target == ignore_index || target < 0 || target >= vocab) {
            loss[r] = 0.0f;
            if (grad)
                for (int64_t j = 0; j < vocab; j++) store(grad, dtype, base + j, 0.0f);
            continue;
        }
        /* One pass for the maximum (first index wins ties, as torch.argmax) and the sum of
         * exponentials, rescaled whenever the maximum grows (online softmax). */
        float max = -INFINITY, sum = 0.0f;
        int64_t argmax = 0;
        for (int64_t j = 0; j < vocab; j++) {
            const float v = load(logits, dtype, base + j);
            if (v > max) {
                sum = sum * expf(max - v) + 1.0f;
                max = v;
                argmax = j;
            } else {
                sum += expf(v - max);
            }
        }
        const float target_logit = load(logits, dtype, base + target);
        loss[r] = logf(sum) + max - target_logit;
        hits += argmax == target;
        if (grad) {
            const float inv = 1.0f / sum;
            for (int64_t j = 0; j < vocab; j++) {
                const float p = expf(load(logits, dtype, base + j) - max) * inv;
                store(grad, dtype, base + j, j == target ? p - 1.0f : p);
            }
        }
    }
    *correct += hits;
    return SLIMCORE_OK;
}

int slimcore_rms_norm_forward(const void *x, const float *weight, void *y, float *rstd,
                              int dtype, int64_t rows, int64_t width, float eps, void *stream) {
    (void)stream;
    if (!x || !weight || !y || !rstd || rows < 1 || width < 1 || bad_dtype(dtype))
        return SLIMCORE_BAD_ARGUMENT;
#pragma omp parallel for schedule(static)
    for (int64_t r = 0; r < rows; r++) {
        const int64_t base = r * width;
        float squares = 0.0f;
        for (int64_t j = 0; j < width; j++) {
            const float v = load(x, dtype, base + j);
            squares += v * v;
        }
        const float s = 1.0f / sqrtf(squares / (float)width + eps);
        rstd[r] = s;
        for (int64_t j = 0; j < width; j++)
            store(y, dtype, base + j, load(x, dtype, base + j) * s * weight[j]);
    }
    return SLIMCORE_OK;
}

int slimcore_rms_norm_backward(const void *dy, const void *x, const float *weight,
                               const float *rstd, void *dx, float *dweight, int dtype,
                               int64_t rows, int64_t width, void *stream) {
    (void)stream;
    if (!dy || !x || !weight || !rstd || !dx || !dweight || rows < 1 || width < 1 ||
        bad_dtype(dtype))
        return SLIMCORE_BAD_ARGUMENT;
    int out_of_memory = 0;
#pragma omp parallel
    {
        /* Each thread sums its rows' share of dweight privately, then adds it once. */
        float *partial = (float *)calloc((size_t)width, sizeof(float));
        if (!partial) {
#pragma omp atomic write
            out_of_memory = 1; /* dweight would lack this thread's rows: say so */
        }
#pragma omp for schedule(static)
        for (int64_t r = 0; r < rows; r++) {
            const int64_t base = r * width;
            const float s = rstd[r];
            float dot = 0.0f; /* sum of dy * weight * x over the row */
            for (int64_t j = 0; j < width; j++) {
                const float g = load(dy, dtype, base + j), v = load(x, dtype, base + j);
                dot += g * weight[j] * v;
                if (partial) partial[j] += g * v * s;
            }
            const float k = dot * s * s * s / (float)width;
            for (int64_t j = 0; j < width; j++) {
                const float g = load(dy, dtype, base + j), v = load(x, dtype, base + j);
                store(dx, dtype, base + j, g * weight[j] * s - v * k);
            }
        }
#pragma omp critical
        {
            if (partial)
                for (int64_t j = 0; j < width; j++) dweight[j] += partial[j];
        }
        free(partial);
    }
    return out_of_memory ? SLIMCORE_OUT_OF_MEMORY : SLIMCORE_OK;
}

int slimcore_rotary(const void *x, void *y, const float *cos, const float *sin, int dtype,
                    int64_t outer, int64_t positions, int64_t inner, int64_t head_dim,
                    int inverse, void *stream) {
    (void)stream;
    if (!x || !y || !cos || !sin || outer < 1 || positions < 1 || inner < 1 || head_dim < 2 ||
        head_dim % 2 || bad_dtype(dtype))
        return SLIMCORE_BAD_ARGUMENT;
    const int64_t half = head_dim / 2;
    const float direction = inverse ? -1.0f : 1.0f;
#pragma omp parallel for collapse(2) schedule(static)
    for (int64_t o = 0; o < outer; o++) {
        for (int64_t t = 0; t < positions; t++) {
            for (int64_t h = 0; h < inner; h++) {
                const int64_t base = ((o * positions + t) * inner + h) * head_dim;
                for (int64_t i = 0; i < half; i++) {
                    const float c = cos[t * half + i], s = direction * sin[t * half + i];
                    const float a = load(x, dtype, base + i), b = load(x, dtype, base + half + i);
                    store(y, dtype, base + i, a * c - b * s);
                    store(y, dtype, base + half + i, a * s + b * c);
                }
            }
        }
    }
    return SLIMCORE_OK;
}

static inline float sigmoid(float v) { return 1.0f / (1.0f + expf(-v)); }

int slimcore_swiglu_forward(const void *gate_up, void *y, int dtype, int64_t rows,
                            int64_t hidden, void *stream) {
    (void)stream;
    if (!gate_up || !y || rows < 1 || hidden < 1 || bad_dtype(dtype)) return SLIMCORE_BAD_ARGUMENT;
#pragma omp parallel for schedule(static)
    for (int64_t r = 0; r < rows; r++) {
        for (int64_t j = 0; j < hidden; j++) {
            const float g = load(gate_up, dtype, r * 2 * hidden + j);
            const float u = load(gate_up, dtype, r * 2 * hidden + hidden + j);
            store(y, dtype, r * hidden + j, g * sigmoid(g) * u);
        }
    }
    return SLIMCORE_OK;
}

int slimcore_swiglu_backward(const void *dy, const void *gate_up, void *dgate_up, int dtype,
                             int64_t rows, int64_t hidden, void *stream) {
    (void)stream;
    if (!dy || !gate_up || !dgate_up || rows < 1 || hidden < 1 || bad_dtype(dtype))
        return SLIMCORE_BAD_ARGUMENT;
#pragma omp parallel for schedule(static)
    for (int64_t r = 0; r < rows; r++) {
        for (int64_t j = 0; j < hidden; j++) {
            const int64_t gi = r * 2 * hidden + j, ui = gi + hidden;
            const float g = load(gate_up, dtype, gi), u = load(gate_up, dtype, ui);
            const float d = load(dy, dtype, r * hidden + j), sg = sigmoid(g);
            store(dgate_up, dtype, gi, d * u * sg * (1.0f + g * (1.0f - sg)));
            store(dgate_up, dtype, ui, d * g * sg);
        }
    }
    return SLIMCORE_OK;
}
