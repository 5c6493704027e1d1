/* slimcore native kernels: the whole ABI of the kernels, plain C (the tokenizer's word table
 * is a library of its own: slimcore_words.h).
 *
 * One header, two implementations: slimcore_native.cu (CUDA; pointers are device pointers,
 * `stream` is a cudaStream_t) and slimcore_native.c (C with OpenMP; pointers are host
 * pointers, `stream` is ignored). Every function returns a status (SLIMCORE_OK or an error
 * code; slimcore_status_string names it) and never allocates.
 *
 * Tensors are dense and row-major. `dtype` says how the floating-point tensors named in
 * each comment are stored (SLIMCORE_F32 or SLIMCORE_BF16); arithmetic is float32 throughout.
 * Norm weights, rotary tables, per-row losses and norm statistics are always float32.
 * Python reads the block between the cdef markers with cffi: keep it free of preprocessor
 * lines.
 */
#ifndef SLIMCORE_NATIVE_H
#define SLIMCORE_NATIVE_H

#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* cdef-begin */
enum slimcore_status {
    SLIMCORE_OK = 0,
    SLIMCORE_BAD_ARGUMENT = 1,   /* a size below 1, a null pointer, an unknown dtype */
    SLIMCORE_LAUNCH_FAILED = 2,  /* the CUDA runtime refused the launch */
    SLIMCORE_OUT_OF_MEMORY = 3   /* a host allocation failed; the outputs are incomplete */
};

enum slimcore_dtype {
    SLIMCORE_F32 = 0,
    SLIMCORE_BF16 = 1
};

/* The ABI revision; the loader refuses a library whose revision differs from its own. */
int slimcore_abi_version(void);

/* A short English description of a status code. */
const char *slimcore_status_string(int status);

/* Softmax cross-entropy of `rows` rows of `vocab` logits (dtype) against int64 `targets`.
 * loss[r] = logsumexp(logits[r]) - logits[r][targets[r]]  (float32; 0 where the target is
 * `ignore_index`). If `grad` is not null it receives softmax(logits[r]) - onehot(target)
 * (dtype; all zeros on ignored rows); `grad` may be `logits` itself (in place).
 * `*correct` (int64, where the kernel runs) is increased by the number of counted rows
 * whose target is the first index of their maximum logit, PyTorch's argmax. */
int slimcore_cross_entropy(const void *logits, void *grad, int dtype, const int64_t *targets,
                           int64_t rows, int64_t vocab, int64_t ignore_index, float *loss,
                           int64_t *correct, void *stream);

/* RMSNorm forward: y = x * rstd * weight, rstd[r] = 1 / sqrt(mean(x[r]^2) + eps);
 * x and y (dtype) are rows x width, weight and rstd float32. */
int slimcore_rms_norm_forward(const void *x, const float *weight, void *y, float *rstd,
                              int dtype, int64_t rows, int64_t width, float eps, void *stream);

/* RMSNorm backward from the forward's rstd: dx (dtype) = d(loss)/dx for dy (dtype);
 * dweight (float32, width) is INCREASED by sum over rows of dy * x * rstd (zero it first). */
int slimcore_rms_norm_backward(const void *dy, const void *x, const float *weight,
                               const float *rstd, void *dx, float *dweight, int dtype,
                               int64_t rows, int64_t width, void *stream);

/* Rotary embedding over x (dtype) of shape (outer, positions, inner, head_dim), position =
 * index along the second axis: each pair (i, i + head_dim/2) is rotated by the angle whose
 * cos and sin (float32, positions x head_dim/2) are given. `inverse` rotates by the
 * negative angle, which is the backward pass. y may be x (in place). */
int slimcore_rotary(const void *x, void *y, const float *cos, const float *sin, int dtype,
                    int64_t outer, int64_t positions, int64_t inner, int64_t head_dim,
                    int inverse, void *stream);

/* SwiGLU forward: gate_up (dtype) is rows x 2*hidden, gate first then up; y (dtype, rows x
 * hidden) = silu(gate) * up. */
int slimcore_swiglu_forward(const void *gate_up, void *y, int dtype, int64_t rows,
                            int64_t hidden, void *stream);

/* SwiGLU backward: dgate_up (dtype, rows x 2*hidden) from dy (rows x hidden) and the
 * forward's gate_up. dgate_up may not alias gate_up. */
int slimcore_swiglu_backward(const void *dy, const void *gate_up, void *dgate_up, int dtype,
                             int64_t rows, int64_t hidden, void *stream);

/* cdef-end */

#ifdef __cplusplus
}
#endif

#endif
