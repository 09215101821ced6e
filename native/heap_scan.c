/*
 * Heap scan: the heap snapshot reader's hot loop in C.
 *
 * A .heapsnapshot is mostly the decimal numbers of the `nodes` and `edges` arrays,
 * record after record; reading them is most of the time a snapshot analysis takes.
 * This reads one chunk of such an array straight into the reader's columns, checking
 * each record as it goes. It is the same work as scanNumbersJs() with storeNodes() and
 * storeEdges() in src/heap/reader.ts (the fallback when the addon did not build; tests
 * compare the two) at about three times the speed. No allocation, no state kept here:
 * safe on any thread.
 *
 *   scanRecords(bytes: Uint8Array, start: number, state: Float64Array(8),
 *               roles: Int32Array(width), limits: Float64Array(4), columns: Array) -> number
 *
 * roles[f] says what field f of a record is (ROLE_*); limits = [records, typeCount,
 * nodeFields, nodeCount] (the last two for edge targets). columns, by role: [types
 * (Uint8Array), names, ids, selfSizes, firstEdge, targets] (Uint32Array; names may be
 * empty, the unused ones absent). state carries what a chunk cuts: the number being read
 * and whether one is, the field, the record, the edges summed so far, and on return
 * whether `]` closed the array and, on an error, which and where (STATE_*).
 * Returns the index after `]`, or bytes.length, or -1 on an error (STATE_ERROR says which).
 */
#define NAPI_VERSION 8
#include <node_api.h>

#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#ifdef __GLIBC__
#include <malloc.h>
#endif

#define U32_MAX 0xffffffffULL

enum { ROLE_SKIP, ROLE_TYPE, ROLE_NAME, ROLE_ID, ROLE_SELF, ROLE_EDGE_COUNT, ROLE_TARGET, ROLE_COUNT };
enum { STATE_VALUE, STATE_DIGITS, STATE_FIELD, STATE_RECORD, STATE_EDGE_SUM, STATE_CLOSED, STATE_ERROR, STATE_AT, STATE_LENGTH };
/* STATE_ERROR: what went wrong; STATE_AT: the byte index (BAD_BYTE, RANGE) or the record (the rest). */
enum { ERR_NONE, ERR_BAD_BYTE, ERR_RANGE, ERR_TOO_MANY, ERR_TYPE, ERR_TARGET, ERR_PARTIAL };

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

static napi_value usage(napi_env env) {
  napi_throw_type_error(env, NULL, "scanRecords(bytes: Uint8Array, start, state: Float64Array(8), roles: Int32Array, limits: Float64Array(4), columns: Array)");
  return NULL;
}

static napi_value scan_records(napi_env env, napi_callback_info info) {
  size_t argc = 6;
  napi_value argv[6];
  napi_get_cb_info(env, info, &argc, argv, NULL, NULL);
  uint8_t* bytes;
  double *state, *limits;
  int32_t* roles;
  size_t n, state_len, width, limits_len;
  double start_d;
  bool is_array;
  if (argc < 6 || !typed_array(env, argv[0], napi_uint8_array, (void**)&bytes, &n) ||
      napi_get_value_double(env, argv[1], &start_d) != napi_ok || !(start_d >= 0) || start_d > (double)n ||
      !typed_array(env, argv[2], napi_float64_array, (void**)&state, &state_len) || state_len < STATE_LENGTH ||
      !typed_array(env, argv[3], napi_int32_array, (void**)&roles, &width) || width == 0 ||
      !typed_array(env, argv[4], napi_float64_array, (void**)&limits, &limits_len) || limits_len < 4 ||
      napi_is_array(env, argv[5], &is_array) != napi_ok || !is_array) {
    return usage(env);
  }
  /* The columns, each checked to hold every record the limits allow. */
  const uint64_t records = (uint64_t)limits[0], type_count = (uint64_t)limits[1];
  const uint64_t node_fields = (uint64_t)limits[2], node_count = (uint64_t)limits[3];
  void* column[ROLE_COUNT] = {0};
  size_t column_len[ROLE_COUNT] = {0};
  /* Given or not, apart from the data pointer: a zero-length typed array (a snapshot with no edges) has a NULL one. */
  bool present[ROLE_COUNT] = {0};
  for (size_t f = 0; f < width; f++) {
    int32_t role = roles[f];
    if (role <= ROLE_SKIP || role >= ROLE_COUNT || present[role]) {
      if (role == ROLE_SKIP) continue;
      return usage(env);
    }
    napi_value v;
    if (napi_get_element(env, argv[5], (uint32_t)(role - 1), &v) != napi_ok ||
        !typed_array(env, v, role == ROLE_TYPE ? napi_uint8_array : napi_uint32_array, &column[role], &column_len[role])) {
      return usage(env);
    }
    present[role] = true;
    size_t need = role == ROLE_EDGE_COUNT ? records + 1 : role == ROLE_NAME && column_len[role] == 0 ? 0 : records;
    if (column_len[role] < need) return usage(env);
    if (role == ROLE_NAME && column_len[role] == 0) column[role] = NULL; /* names not kept */
  }
  if (!present[ROLE_TYPE] || (present[ROLE_TARGET] && node_fields == 0)) return usage(env);
  uint8_t* types = column[ROLE_TYPE];
  uint32_t *names = column[ROLE_NAME], *ids = column[ROLE_ID], *selfs = column[ROLE_SELF];
  uint32_t *first = column[ROLE_EDGE_COUNT], *targets = column[ROLE_TARGET];

  size_t i = (size_t)start_d;
  uint64_t value = state[STATE_VALUE] > (double)U32_MAX ? U32_MAX + 1 : (uint64_t)state[STATE_VALUE];
  int digits = state[STATE_DIGITS] != 0;
  size_t field = (size_t)state[STATE_FIELD];
  uint64_t record = (uint64_t)state[STATE_RECORD];
  double edge_sum = state[STATE_EDGE_SUM];
  int error = ERR_NONE;
  double at = 0;
  double result = (double)n;
  state[STATE_CLOSED] = 0;
  if (field >= width) return usage(env);

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
      if (value > U32_MAX) { error = ERR_RANGE; at = (double)i; break; }
      if (record >= records) { error = ERR_TOO_MANY; at = (double)record; break; }
      uint32_t v = (uint32_t)value;
      switch (roles[field]) {
        case ROLE_TYPE:
          if (v >= type_count) { error = ERR_TYPE; at = (double)record; goto done; }
          types[record] = (uint8_t)v;
          break;
        case ROLE_NAME: if (names) names[record] = v; break;
        case ROLE_ID: ids[record] = v; break;
        case ROLE_SELF: selfs[record] = v; break;
        case ROLE_EDGE_COUNT:
          edge_sum += v;
          first[record + 1] = (uint32_t)edge_sum; /* past 2^32 only in a corrupt file, which the total check rejects */
          break;
        case ROLE_TARGET: {
          uint64_t to = v / node_fields;
          if (to * node_fields != v || to >= node_count) { error = ERR_TARGET; at = (double)record; goto done; }
          targets[record] = (uint32_t)to;
          break;
        }
        default: break;
      }
      if (++field == width) { field = 0; record++; }
      value = 0;
      digits = 0;
    }
    if (b == ',' || b == '\n' || b == ' ' || b == '\r' || b == '\t') continue;
    if (b == ']') {
      if (field != 0) { error = ERR_PARTIAL; at = (double)record; break; }
      state[STATE_CLOSED] = 1;
      result = (double)(i + 1);
      break;
    }
    error = ERR_BAD_BYTE;
    at = (double)i;
    break;
  }
done:
  state[STATE_VALUE] = result == (double)n && !error ? (double)value : 0;
  state[STATE_DIGITS] = result == (double)n && !error ? digits : 0;
  state[STATE_FIELD] = (double)field;
  state[STATE_RECORD] = (double)record;
  state[STATE_EDGE_SUM] = edge_sum;
  state[STATE_ERROR] = error;
  state[STATE_AT] = at;
  return number(env, error ? -1 : result);
}

#define HUGE_PAGE ((uintptr_t)2 << 20)
/* madvise(MADV_HUGEPAGE) on the whole 2 MiB pages inside [data, data + bytes); only a hint. */
static bool advise_huge(void* data, size_t bytes) {
  uintptr_t start = ((uintptr_t)data + HUGE_PAGE - 1) & ~(HUGE_PAGE - 1);
  uintptr_t end = ((uintptr_t)data + bytes) & ~(HUGE_PAGE - 1);
#ifdef MADV_HUGEPAGE
  if (end > start) return madvise((void*)start, end - start, MADV_HUGEPAGE) == 0;
#endif
  return false;
}

/*
 * computeDominators(firstEdge: Uint32Array(N+1), edgeTypes: Uint8Array, edgeTargets: Uint32Array,
 *                   selfSizes: Uint32Array(N), weakType, shortcutType,
 *                   scratch: [dfn, vertex, parent, stack, cursor, firstPred(N+1), semi, preds?] (Uint32Array),
 *                   retained: Float64Array(N)) -> number
 *
 * The dominator tree and retained sizes: the same steps, in the same order, as the JS
 * HeapGraph#computeDominators in src/heap/graph.ts (its fallback; tests compare the two),
 * at a few times its speed. All arrays are the caller's, so it can lend the scratch ones to
 * later passes, and `retained` may share the memory of `stack` and `cursor` (two halves of
 * one buffer: they are done with before it is written); the predecessor lists go in `preds`
 * when it is given and long enough (a slot per edge), else they are allocated here, and freed. On return
 * `semi` holds each node's immediate dominator, `vertex` the pre-order, `retained` the
 * retained sizes. Returns how many nodes the root reaches, or -1 when the predecessor
 * lists cannot be allocated (the caller falls back to JS); bad arguments throw.
 */
#define NONE 0xffffffffu
static napi_value compute_dominators(napi_env env, napi_callback_info info) {
  size_t argc = 8;
  napi_value argv[8];
  napi_get_cb_info(env, info, &argc, argv, NULL, NULL);
  uint32_t *first, *targets, *selfs, *a[8];
  uint8_t* types;
  double* retained;
  size_t first_len, types_len, targets_len, selfs_len, retained_len, len[8];
  uint32_t scratch_count = 0;
  double weak_d, shortcut_d;
  bool is_array;
  if (argc < 8 || !typed_array(env, argv[0], napi_uint32_array, (void**)&first, &first_len) || first_len < 1 ||
      !typed_array(env, argv[1], napi_uint8_array, (void**)&types, &types_len) ||
      !typed_array(env, argv[2], napi_uint32_array, (void**)&targets, &targets_len) ||
      !typed_array(env, argv[3], napi_uint32_array, (void**)&selfs, &selfs_len) ||
      napi_get_value_double(env, argv[4], &weak_d) != napi_ok ||
      napi_get_value_double(env, argv[5], &shortcut_d) != napi_ok ||
      napi_is_array(env, argv[6], &is_array) != napi_ok || !is_array ||
      napi_get_array_length(env, argv[6], &scratch_count) != napi_ok || scratch_count < 7 ||
      !typed_array(env, argv[7], napi_float64_array, (void**)&retained, &retained_len)) {
    goto bad;
  }
  const size_t N = first_len - 1;
  if (N == 0 || selfs_len < N || retained_len < N || types_len < targets_len) goto bad;
  len[7] = 0;
  a[7] = NULL;
  for (uint32_t k = 0; k < (scratch_count > 7 ? 8 : 7); k++) {
    napi_value v;
    if (napi_get_element(env, argv[6], k, &v) != napi_ok || !typed_array(env, v, napi_uint32_array, (void**)&a[k], &len[k]) ||
        len[k] < (k == 5 ? N + 1 : k == 7 ? 0 : N)) {
      goto bad;
    }
  }
  /* The reader checked these; checked again, as this trusts them with raw memory. */
  if (first[N] > targets_len) goto bad;
  for (size_t n = 0; n < N; n++)
    if (first[n] > first[n + 1]) goto bad;
  for (size_t e = 0; e < first[N]; e++)
    if (targets[e] >= N) goto bad;

  const int weak = (int)weak_d, shortcut = (int)shortcut_d;
  uint32_t *dfn = a[0], *vertex = a[1], *parent = a[2], *stack = a[3], *cursor = a[4], *first_pred = a[5], *semi = a[6];
#define ESSENTIAL(from, t) ((int)(t) != weak && ((int)(t) != shortcut || (from) == 0))

  /* 1. Depth-first pre-order from the root over essential edges. */
  for (size_t n = 0; n < N; n++) dfn[n] = NONE;
  int64_t top = 0;
  uint32_t count = 0;
  stack[0] = 0;
  cursor[0] = first[0];
  dfn[0] = count;
  vertex[count++] = 0;
  while (top >= 0) {
    const uint32_t n = stack[top], end = first[n + 1];
    uint32_t e = cursor[top];
    for (; e < end; e++) {
      if (!ESSENTIAL(n, types[e])) continue;
      const uint32_t to = targets[e];
      if (dfn[to] != NONE) continue;
      parent[count] = dfn[n];
      dfn[to] = count;
      vertex[count++] = to;
      cursor[top] = e + 1;
      stack[++top] = to;
      cursor[top] = first[to];
      break;
    }
    if (e >= end) top--;
  }
  const uint32_t reached = count;
  for (size_t n = 0; n < N; n++)
    if (dfn[n] == NONE) {
      parent[count] = 0;
      dfn[n] = count;
      vertex[count++] = (uint32_t)n;
    }

  /* 2. Predecessors by pre-order number, essential edges from reached nodes only. */
  memset(first_pred, 0, (N + 1) * sizeof(uint32_t));
  for (size_t n = 0; n < N; n++) {
    if (dfn[n] >= reached) continue;
    for (uint32_t e = first[n]; e < first[n + 1]; e++)
      if (ESSENTIAL(n, types[e])) first_pred[dfn[targets[e]] + 1]++;
  }
  for (size_t i = 0; i < N; i++) first_pred[i + 1] += first_pred[i];
  const size_t preds_bytes = ((size_t)first_pred[N] + 1) * sizeof(uint32_t);
  /* The caller's, when it is long enough (allocated and touched on another thread: analysis.ts). */
  const bool own_preds = !a[7] || len[7] < (size_t)first_pred[N];
  uint32_t* preds = own_preds ? malloc(preds_bytes) : a[7];
  if (!preds) return number(env, -1);
  /* Huge pages, as for the caller's arrays (src/heap/arrays.ts): the lists take 4 bytes an
     edge, hundreds of MB, and a fresh 4 KiB page costs a fault, measured at about 3 ms per MB
     on this VM (about 1 s per 2 GB snapshot), 2 MiB pages 2 to 40 times less. */
  if (own_preds) advise_huge(preds, preds_bytes);
  uint32_t* fill = semi;
  memcpy(fill, first_pred, N * sizeof(uint32_t));
  for (size_t n = 0; n < N; n++) {
    const uint32_t from = dfn[n];
    if (from >= reached) continue;
    for (uint32_t e = first[n]; e < first[n + 1]; e++)
      if (ESSENTIAL(n, types[e])) preds[fill[dfn[targets[e]]]++] = from;
  }

  /* 3. Semi-dominators (eval/link with path compression), then semi-NCA. */
  uint32_t *ancestor = cursor, *label = dfn, *path = stack;
  for (size_t i = 0; i < N; i++) {
    ancestor[i] = NONE;
    semi[i] = (uint32_t)i;
    label[i] = (uint32_t)i;
  }
  for (uint32_t w = reached - 1; w >= 1; w--) {
    uint32_t s = semi[w];
    for (uint32_t p = first_pred[w]; p < first_pred[w + 1]; p++) {
      const uint32_t v = preds[p];
      uint32_t ev = v;
      if (ancestor[v] != NONE) {
        size_t depth = 0;
        uint32_t x = v;
        while (ancestor[ancestor[x]] != NONE) {
          path[depth++] = x;
          x = ancestor[x];
        }
        while (depth > 0) {
          const uint32_t y = path[--depth], an = ancestor[y];
          if (semi[label[an]] < semi[label[y]]) label[y] = label[an];
          ancestor[y] = ancestor[an];
        }
        ev = label[v];
      }
      const uint32_t u = semi[ev];
      if (u < s) s = u;
    }
    semi[w] = s;
    ancestor[w] = parent[w];
  }
  if (own_preds) free(preds);
  uint32_t* idom = parent;
  for (uint32_t w = 1; w < reached; w++) {
    const uint32_t s = semi[w];
    uint32_t x = idom[w];
    while (x > s) x = idom[x];
    idom[w] = x;
  }

  /* 4. Back to node ordinals; retained sizes bottom-up. `retained` may be the memory of
   *    `stack` and `cursor`, done with by now: no store to them may move past here. */
  __asm__ __volatile__("" ::: "memory");
  uint32_t* dominator = semi;
  for (size_t n = 0; n < N; n++) retained[n] = selfs[n];
  for (size_t w = N - 1; w >= 1; w--) {
    const uint32_t n = vertex[w], d = vertex[idom[w]];
    dominator[n] = d;
    retained[d] += retained[n];
  }
  dominator[0] = 0;
#undef ESSENTIAL
  return number(env, reached);
bad:
  napi_throw_type_error(env, NULL, "computeDominators(firstEdge, edgeTypes, edgeTargets, selfSizes, weak, shortcut, scratch[7], retained): bad arguments");
  return NULL;
}

/*
 * searchPaths(firstEdge: Uint32Array(N+1), edgeTypes: Uint8Array, edgeTargets: Uint32Array,
 *             penalty: Uint8Array(N), stepWeight: Uint8Array(edge types), weakType, shortcutType,
 *             modules: Uint32Array, parentEdge: Uint32Array(N), dist: Uint32Array(N)) -> boolean
 *
 * The retainer paths' search, the same steps in the same order as RetainerPaths#search in
 * src/heap/paths.ts (its fallback; tests compare the two): Dial's algorithm over 64 buckets,
 * an edge costing stepWeight[its type] plus penalty[its target], never through a weak edge or
 * a shortcut past the root. First from the root's shortcuts (the global objects) and the
 * `modules` (scopes, whose parentEdge becomes MODULE_SOURCE), then from the root's other
 * strong edges, farther than anything found in the first round. parentEdge and dist must
 * come filled with NONE. False when the buckets cannot be allocated (the caller falls back
 * to JS); bad arguments (an edge weight outside 1 to 63 among them) throw.
 */
#define BUCKETS 64
#define MODULE_SOURCE 0xfffffffeu
typedef struct {
  uint32_t* items[BUCKETS];
  size_t size[BUCKETS], room[BUCKETS];
  uint64_t pending;
  uint32_t d;
  bool failed;
} queue_t;

static void queue_push(queue_t* q, uint32_t slot, uint32_t n) {
  if (q->size[slot] == q->room[slot]) {
    size_t room = q->room[slot] ? q->room[slot] * 2 : 1024;
    uint32_t* grown = realloc(q->items[slot], room * sizeof(uint32_t));
    if (!grown) {
      q->failed = true;
      return;
    }
    q->items[slot] = grown;
    q->room[slot] = room;
  }
  q->items[slot][q->size[slot]++] = n;
  q->pending++;
}

/* A search's start: at the current distance, unless already reached. */
static void queue_start(queue_t* q, uint32_t* dist, uint32_t* parent_edge, uint32_t n, uint32_t via) {
  if (dist[n] != NONE) return;
  dist[n] = q->d;
  parent_edge[n] = via;
  queue_push(q, q->d % BUCKETS, n);
}

static void queue_run(queue_t* q, const uint32_t* first, const uint8_t* types, const uint32_t* targets,
                      const uint8_t* penalty, const uint8_t* step, int weak, int shortcut,
                      uint32_t* dist, uint32_t* parent_edge) {
  for (; q->pending > 0 && !q->failed; q->d++) {
    const uint32_t d = q->d, slot = d % BUCKETS;
    /* Weights are 1 to BUCKETS - 1: nothing joins this bucket while it is read (others may move). */
    const size_t size = q->size[slot];
    for (size_t i = 0; i < size; i++) {
      const uint32_t n = q->items[slot][i];
      q->pending--;
      if (dist[n] != d) continue; /* reached again, shorter, since it was queued */
      for (uint32_t e = first[n]; e < first[n + 1]; e++) {
        const int type = types[e];
        if (type == weak || (type == shortcut && n != 0)) continue;
        const uint32_t to = targets[e];
        const uint32_t nd = d + step[type] + penalty[to];
        if (nd >= dist[to]) continue;
        dist[to] = nd;
        parent_edge[to] = e;
        queue_push(q, nd % BUCKETS, to);
      }
    }
    q->size[slot] = 0;
  }
}

static napi_value search_paths(napi_env env, napi_callback_info info) {
  size_t argc = 10;
  napi_value argv[10], out;
  napi_get_cb_info(env, info, &argc, argv, NULL, NULL);
  uint32_t *first, *targets, *modules, *parent_edge, *dist;
  uint8_t *types, *penalty, *step;
  size_t first_len, types_len, targets_len, penalty_len, step_len, modules_len, parent_len, dist_len;
  double weak_d, shortcut_d;
  if (argc < 10 || !typed_array(env, argv[0], napi_uint32_array, (void**)&first, &first_len) || first_len < 2 ||
      !typed_array(env, argv[1], napi_uint8_array, (void**)&types, &types_len) ||
      !typed_array(env, argv[2], napi_uint32_array, (void**)&targets, &targets_len) ||
      !typed_array(env, argv[3], napi_uint8_array, (void**)&penalty, &penalty_len) ||
      !typed_array(env, argv[4], napi_uint8_array, (void**)&step, &step_len) ||
      napi_get_value_double(env, argv[5], &weak_d) != napi_ok ||
      napi_get_value_double(env, argv[6], &shortcut_d) != napi_ok ||
      !typed_array(env, argv[7], napi_uint32_array, (void**)&modules, &modules_len) ||
      !typed_array(env, argv[8], napi_uint32_array, (void**)&parent_edge, &parent_len) ||
      !typed_array(env, argv[9], napi_uint32_array, (void**)&dist, &dist_len)) {
    goto bad;
  }
  const size_t N = first_len - 1;
  if (penalty_len < N || parent_len < N || dist_len < N || types_len < targets_len || first[N] > targets_len) goto bad;
  for (size_t n = 0; n < N; n++)
    if (first[n] > first[n + 1]) goto bad;
  for (size_t e = 0; e < first[N]; e++)
    if (targets[e] >= N || types[e] >= step_len) goto bad;
  for (size_t m = 0; m < modules_len; m++)
    if (modules[m] >= N) goto bad;
  /* Every edge's weight from 1 to BUCKETS - 1, or the buckets would mix distances. */
  uint8_t most = 0;
  for (size_t n = 0; n < N; n++)
    if (penalty[n] > most) most = penalty[n];
  for (size_t k = 0; k < step_len; k++)
    if (step[k] == 0 || step[k] + most >= BUCKETS) goto bad;

  const int weak = (int)weak_d, shortcut = (int)shortcut_d;
  queue_t q;
  memset(&q, 0, sizeof q);
  dist[0] = 0;
  /* The global objects (the root's shortcuts) and the app's module scopes first … */
  for (uint32_t e = first[0]; e < first[1]; e++)
    if (types[e] == shortcut) queue_start(&q, dist, parent_edge, targets[e], e);
  for (size_t m = 0; m < modules_len; m++) queue_start(&q, dist, parent_edge, modules[m], MODULE_SOURCE);
  queue_run(&q, first, types, targets, penalty, step, weak, shortcut, dist, parent_edge);
  /* … then what only the GC roots hold, farther than anything found so far. */
  for (uint32_t e = first[0]; e < first[1] && !q.failed; e++)
    if (types[e] != shortcut && types[e] != weak) queue_start(&q, dist, parent_edge, targets[e], e);
  queue_run(&q, first, types, targets, penalty, step, weak, shortcut, dist, parent_edge);
  for (int b = 0; b < BUCKETS; b++) free(q.items[b]);
  napi_get_boolean(env, !q.failed, &out);
  return out;
bad:
  napi_throw_type_error(env, NULL, "searchPaths(firstEdge, edgeTypes, edgeTargets, penalty, stepWeight, weak, shortcut, modules, parentEdge, dist): bad arguments");
  return NULL;
}

/*
 * adviseHugePages(array: TypedArray) -> boolean
 *
 * Asks the kernel to back the array's untouched memory with transparent huge pages
 * (madvise MADV_HUGEPAGE on the whole 2 MiB pages inside it). The analysis fills arrays
 * of hundreds of MB once; with 4 KiB pages each first touch is a page fault (about 3 ms
 * of CPU per MB on a VM), with 2 MiB pages 512 times fewer. Only a hint: false when the
 * kernel declines (THP off, another OS), and the array works the same.
 */
static napi_value advise_huge_pages(napi_env env, napi_callback_info info) {
  size_t argc = 1;
  napi_value argv[1], out;
  napi_get_cb_info(env, info, &argc, argv, NULL, NULL);
  bool is, ok = false;
  napi_typedarray_type type;
  size_t length, offset;
  void* data;
  napi_value buffer;
  if (argc >= 1 && napi_is_typedarray(env, argv[0], &is) == napi_ok && is &&
      napi_get_typedarray_info(env, argv[0], &type, &length, &data, &buffer, &offset) == napi_ok && data) {
    size_t bytes_per = type == napi_int8_array || type == napi_uint8_array || type == napi_uint8_clamped_array ? 1
                       : type == napi_int16_array || type == napi_uint16_array ? 2
                       : type == napi_float64_array || type == napi_bigint64_array || type == napi_biguint64_array ? 8
                       : 4;
    ok = advise_huge(data, length * bytes_per);
  }
  napi_get_boolean(env, ok, &out);
  return out;
}

/*
 * mmapLargeAllocations(bytes: number) -> boolean
 *
 * Makes glibc's malloc serve every block of at least `bytes` with its own mmap, so that
 * freeing it returns the memory to the system at once. By default the threshold rises to
 * the size of each mmapped block freed (up to 32 MiB): after the first snapshot's arrays
 * are freed, the next ones of a few MB come from the heap or, on the reading thread, its
 * arena, and their memory stays counted in the process when they are freed, under the
 * next snapshot's (about 90 MB at the peak of a 275 MB diff). Process-wide, so only a
 * process that exists to analyse snapshots asks (the CLI, the runner child). False where
 * the C library is not glibc.
 */
static napi_value mmap_large_allocations(napi_env env, napi_callback_info info) {
  size_t argc = 1;
  napi_value argv[1], out;
  napi_get_cb_info(env, info, &argc, argv, NULL, NULL);
  double bytes = 0;
  bool ok = false;
  if (argc >= 1 && napi_get_value_double(env, argv[0], &bytes) == napi_ok && bytes >= 4096 && bytes <= (32 << 20)) {
#ifdef __GLIBC__
    ok = mallopt(M_MMAP_THRESHOLD, (int)bytes) == 1;
#endif
  }
  napi_get_boolean(env, ok, &out);
  return out;
}

NAPI_MODULE_INIT() {
  napi_value fn;
  napi_create_function(env, "scanRecords", NAPI_AUTO_LENGTH, scan_records, NULL, &fn);
  napi_set_named_property(env, exports, "scanRecords", fn);
  napi_create_function(env, "computeDominators", NAPI_AUTO_LENGTH, compute_dominators, NULL, &fn);
  napi_set_named_property(env, exports, "computeDominators", fn);
  napi_create_function(env, "searchPaths", NAPI_AUTO_LENGTH, search_paths, NULL, &fn);
  napi_set_named_property(env, exports, "searchPaths", fn);
  napi_create_function(env, "adviseHugePages", NAPI_AUTO_LENGTH, advise_huge_pages, NULL, &fn);
  napi_set_named_property(env, exports, "adviseHugePages", fn);
  napi_create_function(env, "mmapLargeAllocations", NAPI_AUTO_LENGTH, mmap_large_allocations, NULL, &fn);
  napi_set_named_property(env, exports, "mmapLargeAllocations", fn);
  return exports;
}
