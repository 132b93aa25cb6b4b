// The map layout (../bpf/layout.h), handed to JavaScript at load as the addon's `layout`:
// { TP_FAMILY_V4: 4, ..., stats: ["relayed-to-peer", ...], counters: ["toPeerPackets", ...] }.
// src/layout.ts checks it against the values JavaScript was written for, so a loader built from
// another layout fails to load with a reason instead of naming counters wrongly.
#include "kernel_path.h"

static void set_number(napi_env env, napi_value object, const char *name, double value) {
  napi_value v;
  napi_create_double(env, value, &v);
  napi_set_named_property(env, object, name, v);
}

// A frozen array of the names, set on `object` as `key`.
static void set_names(napi_env env, napi_value object, const char *key, const char *const *names,
                      uint32_t n) {
  napi_value array, name;
  if (napi_create_array_with_length(env, n, &array) != napi_ok) return;
  for (uint32_t i = 0; i < n; i++) {
    napi_create_string_utf8(env, names[i], NAPI_AUTO_LENGTH, &name);
    napi_set_element(env, array, i, name);
  }
  napi_object_freeze(env, array);
  napi_set_named_property(env, object, key, array);
}

napi_value layout_object(napi_env env) {
  napi_value layout;
  if (napi_create_object(env, &layout) != napi_ok) return NULL;
#define SET_NUMBER(constant) set_number(env, layout, #constant, constant);
  TP_LAYOUT_NUMBERS(SET_NUMBER)
#undef SET_NUMBER

  // The global counters' names, in the order of tp_stats (enum tp_stat).
  static const char *const stats[] = {
#define STAT_NAME(constant, text) [constant] = text,
      TP_STATS(STAT_NAME)
#undef STAT_NAME
  };
  set_names(env, layout, "stats", stats, TP_STAT_COUNT);

  // A binding's counters' names, in the order counters() and unbind() write them.
  static const char *const counters[] = {
#define COUNTER_NAME(field, text) [TP_COUNTER_##field] = text,
      TP_BINDING_COUNTERS(COUNTER_NAME)
#undef COUNTER_NAME
  };
  set_names(env, layout, "counters", counters, TP_COUNTER_COUNT);
  napi_object_freeze(env, layout);
  return layout;
}
