/*
 * Heap scan: the heap snapshot reader's hot loop in C.
 *
 * A .heapsnapshot is mostly decimal numbers separated by commas and newlines;
 * reading them is most of the time a snapshot analysis takes. This is the same
 * loop as scanNumbers() in src/heap/reader.ts (which stays the fallback when the
 * addon did not build) at about four times its speed: no allocation, no state
 * kept here, safe on any thread.
 *
 *   scan(bytes: Uint8Array, start: number, out: Uint32Array, state: Float64Array) -> number
 *
 * state = [fill, value, digits, closed]: where `out` is filled to, the number
 * cut by the end of `bytes` (and whether one is), and whether `]` ended the
 * array. Returns the index after `]`, or bytes.length, or:
 *   -(j + 1)  for a byte at j that is neither digit, separator nor `]`;
 *   -2^40     when `out` is full;
 *   -2^41     for a number above 2^32 - 1.
 */
#define NAPI_VERSION 8
#include <node_api.h>

#include <stddef.h>
#include <stdint.h>

#define SCAN_OVERFLOW (-1099511627776.0) /* -(2^40) */
#define SCAN_RANGE (-2199023255552.0)    /* -(2^41) */
#define U32_MAX 0xffffffffULL

static napi_value number(napi_env env, double v) {
  napi_value out;
  napi_create_double(env, v, &out);
  return out;
}

static int typed_array(napi_env env, napi_value v, napi_typedarray_type want, void** data, size_t* length) {
  bool is;
  napi_typedarray_type type;
  if (napi_is_typedarray(env, v, &is) != napi_ok || !is) return 0;
  if (napi_get_typedarray_info(env, v, &type, length, data, NULL, NULL) != napi_ok) return 0;
  return type == want;
}

static napi_value scan(napi_env env, napi_callback_info info) {
  size_t argc = 4;
  napi_value argv[4];
  napi_get_cb_info(env, info, &argc, argv, NULL, NULL);
  uint8_t* bytes;
  uint32_t* out;
  double* state;
  size_t n, cap, state_len;
  double start_d;
  if (argc < 4 || !typed_array(env, argv[0], napi_uint8_array, (void**)&bytes, &n) ||
      napi_get_value_double(env, argv[1], &start_d) != napi_ok ||
      !typed_array(env, argv[2], napi_uint32_array, (void**)&out, &cap) ||
      !typed_array(env, argv[3], napi_float64_array, (void**)&state, &state_len) || state_len < 4 ||
      !(start_d >= 0) || start_d > (double)n || !(state[0] >= 0) || state[0] > (double)cap) {
    napi_throw_type_error(env, NULL, "scan(bytes: Uint8Array, start, out: Uint32Array, state: Float64Array(4))");
    return NULL;
  }
  size_t i = (size_t)start_d;
  size_t fill = (size_t)state[0];
  /* A cut number is carried as a double; above 2^32 it only needs to stay above. */
  uint64_t value = state[1] > (double)U32_MAX ? U32_MAX + 1 : (uint64_t)state[1];
  int digits = state[2] != 0;
  state[3] = 0;
  double result = (double)n;
  for (; i < n; i++) {
    uint8_t b = bytes[i];
    uint32_t d = (uint32_t)b - '0';
    if (d < 10) {
      value = value * 10 + d;
      if (value > U32_MAX) value = U32_MAX + 1; /* saturate: reported when the number ends */
      digits = 1;
      continue;
    }
    if (digits) {
      if (fill >= cap) { result = SCAN_OVERFLOW; break; }
      if (value > U32_MAX) { result = SCAN_RANGE; break; }
      out[fill++] = (uint32_t)value;
      value = 0;
      digits = 0;
    }
    if (b == ',' || b == '\n' || b == ' ' || b == '\r' || b == '\t') continue;
    if (b == ']') { state[3] = 1; result = (double)(i + 1); break; }
    result = -(double)i - 1;
    break;
  }
  state[0] = (double)fill;
  if (result == (double)n) {
    state[1] = (double)value;
    state[2] = digits;
  } else {
    state[1] = 0;
    state[2] = 0;
  }
  return number(env, result);
}

NAPI_MODULE_INIT() {
  napi_value fn;
  napi_create_function(env, "scan", NAPI_AUTO_LENGTH, scan, NULL, &fn);
  napi_set_named_property(env, exports, "scan", fn);
  return exports;
}
