/* The tokenizer's word cache (core/text/word_cache.py explains why encoding word by word
 * gives SentencePiece's ids): a hash table from a word's key (its UTF-8 bytes less its first
 * space) to its token ids, and the loop that cuts a text into keys and copies their ids.
 * Built on its own (core/native/loader.py, kind "words"). Not thread-safe: the caller
 * serializes. */
#include "slimcore_words.h"

#include <stdlib.h>
#include <string.h>

int slimcore_words_abi_version(void) { return 1; /* core/native/loader.py ABI_VERSION */ }

/* Layout for few cache misses per lookup: a slot holds the key's hash beside its entry's
 * number, and an entry holds a short key itself (most words), so a lookup touches a slot, an
 * entry and the ids. */
#define WORDS_INLINE_KEY 16

typedef struct {
    uint64_t hash;
    int64_t entry; /* entry + 1; 0: empty */
} words_slot;

typedef struct {
    int32_t key_len, n_ids;
    int64_t ids_at;                           /* offset in ids */
    union {
        char inline_key[WORDS_INLINE_KEY];    /* key_len <= WORDS_INLINE_KEY */
        int64_t key_at;                       /* else: offset in keys */
    } key;
} words_entry;

struct slimcore_words {
    int64_t max_words, max_key_bytes, count;
    int whitespace_only_pieces;
    uint64_t mask; /* slots - 1, slots a power of two >= 2 x max_words */
    words_slot *slots;
    words_entry *entries;
    char *keys;
    int32_t *ids;
    int64_t keys_used, keys_capacity, ids_used, ids_capacity;
};

static uint64_t words_hash(const char *key, int64_t n) {
    uint64_t h = 14695981039346656037ull; /* FNV-1a */
    for (int64_t i = 0; i < n; i++) h = (h ^ (unsigned char)key[i]) * 1099511628211ull;
    return h ^ (h >> 29);
}

static const char *words_key(const slimcore_words *w, const words_entry *e) {
    return e->key_len <= WORDS_INLINE_KEY ? e->key.inline_key : w->keys + e->key.key_at;
}

/* The entry of `key`, or -1; `*slot` receives where it is or would go. */
static int64_t words_find(const slimcore_words *w, const char *key, int64_t n, uint64_t h,
                          uint64_t *slot) {
    uint64_t i = h & w->mask;
    for (;;) {
        const words_slot *s = &w->slots[i];
        if (s->entry == 0) {
            *slot = i;
            return -1;
        }
        if (s->hash == h) {
            const words_entry *e = &w->entries[s->entry - 1];
            if (e->key_len == n && memcmp(words_key(w, e), key, (size_t)n) == 0) {
                *slot = i;
                return s->entry - 1;
            }
        }
        i = (i + 1) & w->mask;
    }
}

static int words_grow(void **buffer, int64_t *capacity, int64_t needed, size_t item) {
    if (needed <= *capacity) return 1;
    int64_t c = *capacity > 0 ? *capacity : 4096;
    while (c < needed) c *= 2;
    void *grown = realloc(*buffer, (size_t)c * item);
    if (grown == NULL) return 0;
    *buffer = grown;
    *capacity = c;
    return 1;
}

void slimcore_words_free(slimcore_words *w) {
    if (w == NULL) return;
    free(w->slots);
    free(w->entries);
    free(w->keys);
    free(w->ids);
    free(w);
}

slimcore_words *slimcore_words_new(int64_t max_words, int64_t max_key_bytes,
                                   int whitespace_only_pieces) {
    if (max_words < 1 || max_key_bytes < 0) return NULL;
    slimcore_words *w = (slimcore_words *)calloc(1, sizeof(slimcore_words));
    if (w == NULL) return NULL;
    uint64_t slots = 1;
    while (slots < 2 * (uint64_t)max_words) slots *= 2;
    w->max_words = max_words;
    w->max_key_bytes = max_key_bytes;
    w->whitespace_only_pieces = whitespace_only_pieces;
    w->mask = slots - 1;
    w->slots = (words_slot *)calloc(slots, sizeof(words_slot));
    w->entries = (words_entry *)malloc((size_t)max_words * sizeof(words_entry));
    if (!w->slots || !w->entries) {
        slimcore_words_free(w);
        return NULL;
    }
    return w;
}

int64_t slimcore_words_count(const slimcore_words *w) { return w->count; }

static int words_put(slimcore_words *w, const char *key, int64_t key_bytes,
                     const int32_t *ids, int64_t n_ids) {
    if (w->count >= w->max_words || key_bytes > w->max_key_bytes || n_ids < 1) return 0;
    uint64_t h = words_hash(key, key_bytes), slot;
    if (words_find(w, key, key_bytes, h, &slot) >= 0) return 0;
    int inline_key = key_bytes <= WORDS_INLINE_KEY;
    if ((!inline_key &&
         !words_grow((void **)&w->keys, &w->keys_capacity, w->keys_used + key_bytes, 1)) ||
        !words_grow((void **)&w->ids, &w->ids_capacity, w->ids_used + n_ids, sizeof(int32_t)))
        return 0;
    words_entry *e = &w->entries[w->count];
    e->key_len = (int32_t)key_bytes;
    e->n_ids = (int32_t)n_ids;
    e->ids_at = w->ids_used;
    if (inline_key) {
        memcpy(e->key.inline_key, key, (size_t)key_bytes);
    } else {
        e->key.key_at = w->keys_used;
        memcpy(w->keys + w->keys_used, key, (size_t)key_bytes);
        w->keys_used += key_bytes;
    }
    memcpy(w->ids + w->ids_used, ids, (size_t)n_ids * sizeof(int32_t));
    w->ids_used += n_ids;
    w->slots[slot].hash = h;
    w->slots[slot].entry = ++w->count;
    return 1;
}

int64_t slimcore_words_put(slimcore_words *w, int64_t count, const char *keys,
                           const int64_t *key_bytes, const int32_t *ids, const int64_t *n_ids) {
    int64_t kept = 0;
    for (int64_t i = 0; i < count; i++) {
        kept += words_put(w, keys, key_bytes[i], ids, n_ids[i]);
        keys += key_bytes[i];
        ids += n_ids[i];
    }
    return kept;
}

int64_t slimcore_words_encode(const slimcore_words *w, const char *text, int64_t text_bytes,
                              int32_t *ids, int64_t ids_capacity, int64_t *missing,
                              int64_t missing_capacity, int64_t *n_missing, int64_t *n_words) {
    int64_t n = 0, key_start = 0, search = 0;
    *n_missing = 0;
    *n_words = 0;
    for (;;) {
        const char *space = search < text_bytes
            ? (const char *)memchr(text + search, ' ', (size_t)(text_bytes - search)) : NULL;
        int64_t end;
        if (space == NULL) {
            end = text_bytes; /* the last key */
        } else {
            int64_t at = space - text;
            search = at + 1;
            /* With whitespace-only pieces a space starts a word only after a non-space (the
             * text's first byte follows the space SentencePiece puts in front). */
            if (w->whitespace_only_pieces && (at == 0 || text[at - 1] == ' ')) continue;
            end = at;
        }
        const char *key = text + key_start;
        int64_t length = end - key_start;
        uint64_t slot;
        int64_t e = words_find(w, key, length, words_hash(key, length), &slot);
        ++*n_words;
        if (e >= 0) {
            const words_entry *entry = &w->entries[e];
            if (n + entry->n_ids > ids_capacity) return -1;
            memcpy(ids + n, w->ids + entry->ids_at, (size_t)entry->n_ids * sizeof(int32_t));
            n += entry->n_ids;
        } else {
            if (*n_missing >= missing_capacity) return -2;
            int64_t *m = missing + 3 * *n_missing;
            m[0] = key_start;
            m[1] = length;
            m[2] = n;
            ++*n_missing;
        }
        if (space == NULL) return n;
        key_start = end + 1;
    }
}
