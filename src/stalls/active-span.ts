/**
 * The OpenTelemetry span the stalled code ran in: read by the worker while the main thread is
 * paused for the stall's stack, by one expression evaluated on the paused frame. The active
 * context is what the app's context manager holds for the code running now, which is only there
 * (the main thread cannot run while it is blocked, and by the time it runs again it has left that
 * code). A leaf module.
 *
 * Safe by construction: the expression runs no code of the app or of OpenTelemetry. It reads
 * plain data properties through their descriptors (a getter is never called), and calls only
 * Node's own `AsyncLocalStorage.prototype.getStore` (on the store of OpenTelemetry's
 * AsyncLocalStorage context manager, `@opentelemetry/context-async-hooks`) and `Map.prototype.get`
 * (on the context's map of values). Anything else (no OpenTelemetry API in the process, another
 * context manager, no span) gives `null`. V8's side-effect-free mode (`throwOnSideEffect`) cannot be
 * used: it rejects `getStore`, which reaches a native binding. Bounded: a few property reads.
 */

/** The span active in the code that blocked the loop. */
export interface ActiveSpan {
  /** 32 lowercase hex characters. */
  traceId: string;
  /** 16 lowercase hex characters. */
  spanId: string;
}

/**
 * Evaluated on the paused top frame; gives `"<traceId>:<spanId>"` or null. The API's global is
 * `globalThis[Symbol.for('opentelemetry.js.api.1')]` (every 1.x), its `context` the registered
 * context manager; a span is the context's value at `Symbol.for('OpenTelemetry Context Key SPAN')`,
 * its ids in `_spanContext` (the SDK's Span and the API's NonRecordingSpan both keep them there).
 */
export const ACTIVE_SPAN_EXPRESSION = `(() => {
  const own = (o, k) => { if (o === null || (typeof o !== 'object' && typeof o !== 'function')) return undefined; const d = Object.getOwnPropertyDescriptor(o, k); return d && 'value' in d ? d.value : undefined; };
  const hooks = typeof process === 'object' && typeof process.getBuiltinModule === 'function' ? process.getBuiltinModule('node:async_hooks') : undefined;
  const Storage = hooks && hooks.AsyncLocalStorage;
  if (typeof Storage !== 'function') return null;
  const manager = own(own(globalThis, Symbol.for('opentelemetry.js.api.1')), 'context');
  const storage = own(manager, '_asyncLocalStorage');
  if (!(storage instanceof Storage)) return null;
  const values = own(Storage.prototype.getStore.call(storage), '_currentContext');
  if (!(values instanceof Map)) return null;
  const ids = own(Map.prototype.get.call(values, Symbol.for('OpenTelemetry Context Key SPAN')), '_spanContext');
  const traceId = own(ids, 'traceId'), spanId = own(ids, 'spanId');
  return typeof traceId === 'string' && typeof spanId === 'string' ? traceId + ':' + spanId : null;
})()`;

/** The span from the expression's value, when it is a valid (W3C: not all zeros) pair of ids. */
export function parseActiveSpan(value: unknown): ActiveSpan | undefined {
  if (typeof value !== 'string') return undefined;
  const match = /^([0-9a-f]{32}):([0-9a-f]{16})$/.exec(value);
  if (!match || /^0+$/.test(match[1]!) || /^0+$/.test(match[2]!)) return undefined;
  return { traceId: match[1]!, spanId: match[2]! };
}
