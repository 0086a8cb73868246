// Helpers for switchyard plugins in C, over the generated bindings
// (processor.h). Header-only. Strings in the bindings are (ptr, len) pairs,
// not NUL-terminated; what a plugin returns is freed by the bindings.
#ifndef SWITCHYARD_H
#define SWITCHYARD_H

#include <stdlib.h>
#include <string.h>

#include "processor.h"

// A copy of `len` bytes of `text` as a bindings string.
static inline processor_string_t sy_str_n(const char *text, size_t len) {
  processor_string_t s;
  processor_string_dup_n(&s, text, len);
  return s;
}

static inline processor_string_t sy_str(const char *text) { return sy_str_n(text, strlen(text)); }

// A growable byte buffer, for building JSON text.
typedef struct {
  char *ptr;
  size_t len, cap;
} sy_buf;

static inline void sy_buf_bytes(sy_buf *b, const char *s, size_t n) {
  if (b->len + n > b->cap) {
    b->cap = (b->len + n) * 2 + 16;
    b->ptr = realloc(b->ptr, b->cap);
    if (b->ptr == NULL) abort();
  }
  memcpy(b->ptr + b->len, s, n);
  b->len += n;
}

static inline void sy_buf_raw(sy_buf *b, const char *s) { sy_buf_bytes(b, s, strlen(s)); }

// Decimal digits of `n` (no stdio: it would need WASI).
static inline void sy_buf_u64(sy_buf *b, unsigned long long n) {
  char tmp[24];
  size_t len = 0;
  do {
    tmp[sizeof tmp - 1 - len++] = (char)('0' + n % 10);
    n /= 10;
  } while (n);
  sy_buf_bytes(b, tmp + sizeof tmp - len, len);
}

// `s` as a JSON string, escaped as serde_json does (so outputs match the
// other SDKs byte for byte).
static inline void sy_buf_json_string(sy_buf *b, const uint8_t *s, size_t n) {
  static const char hex[] = "0123456789abcdef";
  sy_buf_raw(b, "\"");
  for (size_t i = 0; i < n; i++) {
    uint8_t c = s[i];
    const char *esc = NULL;
    switch (c) {
      case '"': esc = "\\\""; break;
      case '\\': esc = "\\\\"; break;
      case '\n': esc = "\\n"; break;
      case '\r': esc = "\\r"; break;
      case '\t': esc = "\\t"; break;
      case '\b': esc = "\\b"; break;
      case '\f': esc = "\\f"; break;
    }
    if (esc != NULL) {
      sy_buf_raw(b, esc);
    } else if (c < 0x20) {
      char u[6] = {'\\', 'u', '0', '0', hex[c >> 4], hex[c & 15]};
      sy_buf_bytes(b, u, 6);
    } else {
      sy_buf_bytes(b, (const char *)&c, 1);
    }
  }
  sy_buf_raw(b, "\"");
}

// An output event for `topic` with `data` (JSON text, taken over) and an
// optional key (NULL: the input's). The router fills id, time, source.
static inline processor_output_t sy_output(const char *topic, const char *type, sy_buf data,
                                           const char *key, size_t key_len) {
  processor_output_t out;
  memset(&out, 0, sizeof out);
  out.topic = sy_str(topic);
  out.event.type = sy_str(type);
  out.event.version = sy_str("1");
  out.event.content_type = sy_str("application/json");
  out.event.data = (processor_string_t){(uint8_t *)data.ptr, data.len};
  if (key != NULL) {
    out.event.key.is_some = true;
    out.event.key.val = sy_str_n(key, key_len);
  }
  return out;
}

// Fails `handle` with a bad event (dead-lettered) carrying `reason`.
static inline bool sy_bad_event(processor_failure_t *err, const char *reason) {
  err->tag = SWITCHYARD_PLUGIN_TYPES_FAILURE_BAD_EVENT;
  err->val.bad_event = sy_str(reason);
  return false;
}

static inline void sy_log(switchyard_plugin_log_level_t level, const char *message) {
  processor_string_t m = {(uint8_t *)message, strlen(message)};
  switchyard_plugin_log_log(level, &m);
}

#endif
