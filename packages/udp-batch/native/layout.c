// The shared memory layout (layout.h), handed to JavaScript at load as the addon's `layout`:
// { HEADROOM: 4, SLOT_SIZE: 65544, ..., dropReasons: ["send-queue-full", ...] }.
// src/layout.ts checks it against the values JavaScript was written for, so a module built
// from another layout fails to load with a reason instead of misreading memory.
#include "udp_batch.h"

static void set_number(napi_env env, napi_value object, const char* name, double value) {
  napi_value v;
  napi_create_double(env, value, &v);
  napi_set_named_property(env, object, name, v);
}

napi_value layout_object(napi_env env) {
  napi_value layout, reasons, name;
  CHECK(napi_create_object(env, &layout));
#define SET_NUMBER(constant) set_number(env, layout, #constant, constant);
  LAYOUT_NUMBERS(SET_NUMBER)
#undef SET_NUMBER

  // The drop reasons' names, in the order of their counters (stats[ST_DROPS + reason]).
  static const char* const names[] = {
#define REASON_NAME(constant, text) [constant] = text,
      DROP_REASONS(REASON_NAME)
#undef REASON_NAME
  };
  CHECK(napi_create_array_with_length(env, DROP_COUNT, &reasons));
  for (uint32_t i = 0; i < DROP_COUNT; i++) {
    napi_create_string_utf8(env, names[i], NAPI_AUTO_LENGTH, &name);
    napi_set_element(env, reasons, i, name);
  }
  napi_object_freeze(env, reasons);
  napi_set_named_property(env, layout, "dropReasons", reasons);
  napi_object_freeze(env, layout);
  return layout;
}
