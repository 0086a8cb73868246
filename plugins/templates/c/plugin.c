// {{name}}: counts the events it sees per ordering key (in kv) and publishes
// the count to the topic `{{name}}`.
//
// Try: `switchyard plugin test` (runs samples/*.json), then edit `handle`.
// "switchyard.h" and "processor.h" are the SDK: `switchyard plugin build`
// provides them (they are also in plugins/sdk/c of the switchyard sources).
#include "switchyard.h"

bool exports_processor_init(processor_string_t *config, processor_string_t *err) {
  (void)err;  // set *err and return false to refuse the config
  processor_string_free(config);
  return true;
}

bool exports_processor_handle(processor_event_t *ev, processor_list_output_t *ret,
                              processor_failure_t *err) {
  (void)err;  // return sy_bad_event(err, "why") to dead-letter the event
  const char *key = ev->key.is_some ? (const char *)ev->key.val.ptr : "";
  size_t key_len = ev->key.is_some ? ev->key.val.len : 0;

  // kv: "seen/<key>" holds the count as decimal text.
  sy_buf state_key = {0};
  sy_buf_raw(&state_key, "seen/");
  sy_buf_bytes(&state_key, key, key_len);
  processor_string_t sk = {(uint8_t *)state_key.ptr, state_key.len};
  unsigned long long seen = 0;
  processor_list_u8_t stored;
  if (switchyard_plugin_kv_get(&sk, &stored)) {
    for (size_t i = 0; i < stored.len && stored.ptr[i] >= '0' && stored.ptr[i] <= '9'; i++)
      seen = seen * 10 + (unsigned long long)(stored.ptr[i] - '0');
    processor_list_u8_free(&stored);
  }
  seen++;
  sy_buf count = {0};
  sy_buf_u64(&count, seen);
  processor_list_u8_t value = {(uint8_t *)count.ptr, count.len};
  switchyard_plugin_kv_put(&sk, &value);  // commits atomically with the outputs
  free(state_key.ptr);
  free(count.ptr);

  // {"eventType":"<type>","seen":N}, keys in code-point order like the other SDKs.
  sy_buf data = {0};
  sy_buf_raw(&data, "{\"eventType\":");
  sy_buf_json_string(&data, ev->type.ptr, ev->type.len);
  sy_buf_raw(&data, ",\"seen\":");
  sy_buf_u64(&data, seen);
  sy_buf_raw(&data, "}");

  ret->len = 1;
  ret->ptr = malloc(sizeof(processor_output_t));
  ret->ptr[0] = sy_output("{{name}}", "{{name}}.counted", data, key, key_len);
  processor_event_free(ev);  // the arguments belong to the plugin
  return true;
}
