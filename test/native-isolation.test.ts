// Each native addon loads on its own: a broken or truncated one, or a V8-API one built for
// another Node, is refused with its reason and never takes the process or the others down.
// Real addons (build/Release, made by `npm run build:native`), damaged in a copy of the package.
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import type { NativePart } from '../src/native.js';
import { tempDir } from './helpers.js';
import { nativeAddon, needs } from './requirements.js';

const ROOT = path.resolve(__dirname, '..', '..'); // dist/test -> repo root
const RELEASE = path.join(ROOT, 'build', 'Release');
const NAMES = ['loop_watch', 'heap_scan', 'gc_stats'] as const;

/** A copy of the package's loader and addons with `damage` applied to the addons, and what its nativeParts() says in a child. */
function partsWith(damage: (release: string) => void): {
  status: number | null;
  signal: string | null;
  parts: NativePart[];
} {
  const root = tempDir('sysprobe-native-');
  try {
    fs.mkdirSync(path.join(root, 'dist', 'src'), { recursive: true });
    for (const file of ['native.js', 'native-file.js'])
      fs.copyFileSync(path.join(ROOT, 'dist', 'src', file), path.join(root, 'dist', 'src', file));
    const release = path.join(root, 'build', 'Release');
    fs.mkdirSync(release, { recursive: true });
    for (const name of NAMES) fs.copyFileSync(path.join(RELEASE, `${name}.node`), path.join(release, `${name}.node`));
    damage(release);
    const loader = JSON.stringify(path.join(root, 'dist', 'src', 'native.js'));
    const res = spawnSync(process.execPath, ['-e', `console.log(JSON.stringify(require(${loader}).nativeParts()))`], {
      encoding: 'utf8',
      timeout: 30_000,
    });
    return {
      status: res.status,
      signal: res.signal,
      parts: res.status === 0 ? (JSON.parse(res.stdout) as NativePart[]) : [],
    };
  } finally {
    fs.rmSync(root, { recursive: true, force: true });
  }
}

const part = (parts: NativePart[], name: string): NativePart => parts.find((p) => p.name === name)!;

describe('native parts: one that is broken never takes the others down', function () {
  before(function () {
    // All three built for this Node in build/Release, or there is nothing to damage.
    for (const name of NAMES) needs(this, nativeAddon(name));
  });

  it('a truncated addon (which dlopen would answer with SIGBUS) is refused; the process and the others live', () => {
    const { status, signal, parts } = partsWith((release) => {
      const file = path.join(release, 'loop_watch.node');
      fs.truncateSync(file, Math.floor(fs.statSync(file).size / 2));
    });
    assert.equal(signal, null, `the child died of ${signal}`);
    assert.equal(status, 0);
    assert.equal(part(parts, 'loop_watch').loaded, false);
    assert.match(
      part(parts, 'loop_watch').reason,
      /loop_watch\.node: not loaded: truncated: \d+ bytes, but .* end at byte \d+/,
    );
    assert.ok(part(parts, 'loop_watch').cost, 'says what its absence costs');
    assert.equal(part(parts, 'heap_scan').loaded, true);
    assert.equal(part(parts, 'gc_stats').loaded, true);
  });

  it('a file that is not an addon at all is refused by name; the others load', () => {
    const { status, parts } = partsWith((release) =>
      fs.writeFileSync(path.join(release, 'heap_scan.node'), 'not a shared object\n'.repeat(100)),
    );
    assert.equal(status, 0);
    assert.equal(part(parts, 'heap_scan').loaded, false);
    assert.match(part(parts, 'heap_scan').reason, /heap_scan\.node: not loaded: not an ELF file/);
    assert.equal(part(parts, 'loop_watch').loaded, true);
    assert.equal(part(parts, 'gc_stats').loaded, true);
  });

  it('gc_stats (V8 C++ API) built for another Node ABI is not loaded, and says which ABI it was built for', () => {
    const { status, parts } = partsWith((release) => {
      const file = path.join(release, 'gc_stats.node');
      const bytes = fs.readFileSync(file);
      const mark = Buffer.from(`sysprobe-abi:${process.versions.modules};`);
      const at = bytes.indexOf(mark);
      assert.ok(at >= 0, 'gc_stats carries the ABI it was built for');
      // Same length, another ABI: what a build for another Node carries.
      const other = String(Number(process.versions.modules) + 1).padStart(process.versions.modules.length, '0');
      bytes.write(`sysprobe-abi:${other};`, at, 'latin1');
      fs.writeFileSync(file, bytes);
    });
    assert.equal(status, 0);
    const gc = part(parts, 'gc_stats');
    assert.equal(gc.loaded, false);
    assert.match(gc.reason, new RegExp(`built for Node ABI \\d+, this Node is ABI ${process.versions.modules}`));
    assert.equal(part(parts, 'loop_watch').loaded, true);
    assert.equal(part(parts, 'heap_scan').loaded, true);
  });
});
