/* The tokenizer's word table: a small C library of its own (not the kernels'), so that a
 * tokenizer never builds the kernels. Python reads the block between the cdef markers with
 * cffi (core/native/loader.py): keep it free of preprocessor lines. */
#ifndef SLIMCORE_WORDS_H
#define SLIMCORE_WORDS_H

#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* cdef-begin */
/* The ABI revision; the loader refuses a library whose revision differs from its own. */
int slimcore_words_abi_version(void);

/* The tokenizer's word cache (host memory; core/text/word_cache.py): keys (a word's
 * UTF-8 bytes less its first space) to int32 token ids. Not thread-safe. */
typedef struct slimcore_words slimcore_words;

/* An empty cache of at most `max_words` keys of at most `max_key_bytes` bytes; words start
 * after a non-space (`whitespace_only_pieces`) or at every space. Null when out of memory. */
slimcore_words *slimcore_words_new(int64_t max_words, int64_t max_key_bytes,
                                   int whitespace_only_pieces);

void slimcore_words_free(slimcore_words *words);

/* The number of keys kept. */
int64_t slimcore_words_count(const slimcore_words *words);

/* Keeps `count` keys, given one after another in `keys` (key_bytes[i] bytes each), with
 * their ids one after another in `ids` (n_ids[i] each). Returns how many it kept: a key
 * present, too long or without ids, or one that comes when the cache is full, is not. */
int64_t slimcore_words_put(slimcore_words *words, int64_t count, const char *keys,
                           const int64_t *key_bytes, const int32_t *ids, const int64_t *n_ids);

/* Cuts `text` (UTF-8, not empty) into keys and writes the ids of the kept ones to `ids`, in
 * order; returns how many, -1 if `ids_capacity` is too small, -2 if `missing_capacity` is
 * (the caller grows the buffer and calls again). Each key not kept adds a triple to `missing`:
 * its first byte, its length, and where in `ids` its ids belong. `*n_words` counts keys. */
int64_t slimcore_words_encode(const slimcore_words *words, const char *text,
                              int64_t text_bytes, int32_t *ids, int64_t ids_capacity,
                              int64_t *missing, int64_t missing_capacity, int64_t *n_missing,
                              int64_t *n_words);
/* cdef-end */

#ifdef __cplusplus
}
#endif

#endif
