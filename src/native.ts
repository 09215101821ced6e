/**
 * Loads sysprobe's optional native addons (built by node-gyp at install into
 * build/Release). Each loads once per thread; when one did not build, the caller
 * gets the reason and falls back to a JS way of doing less.
 */
import * as path from 'node:path';

const loaded = new Map<string, { addon: unknown; error: string | undefined }>();

export function loadNative<T>(name: 'loop_watch' | 'gc_stats' | 'heap_scan'): { addon: T | undefined; error: string | undefined } {
  let entry = loaded.get(name);
  if (!entry) {
    try {
      // dist/src/native.js -> <package>/build/Release
      entry = { addon: require(path.join(__dirname, '..', '..', 'build', 'Release', `${name}.node`)), error: undefined };
    } catch (err) {
      entry = { addon: undefined, error: err instanceof Error ? err.message.split('\n')[0] : String(err) };
    }
    loaded.set(name, entry);
  }
  return entry as { addon: T | undefined; error: string | undefined };
}
