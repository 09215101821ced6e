/** Real heap snapshots with known contents, written by child processes, for the heap tests. */
import { execFile } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { promisify } from 'node:util';
import { tempDir } from './helpers.js';

export type LeakKind = 'map' | 'closure' | 'listener';

/**
 * The child builds its holders, takes snapshot A, leaks `count` objects (each with a
 * unique 200-byte string) while also making garbage that dies, takes B, leaks a few
 * more, takes C. Each kind holds its leak differently.
 */
const SCRIPT = String.raw`
const v8 = require('node:v8');
const { EventEmitter } = require('node:events');
const [kind, dir, count] = [process.argv[1], process.argv[2], Number(process.argv[3])];
class LeakyEntry { constructor(i) { this.i = i; this.payload = String(i).padStart(8, '0') + 'x'.repeat(192); } }
class ClosureLeak { constructor(i) { this.i = i; this.payload = String(i).padStart(8, '0') + 'y'.repeat(192); } }
class ListenerLeak { constructor(i) { this.i = i; this.payload = String(i).padStart(8, '0') + 'z'.repeat(192); } }
class Transient { constructor(i) { this.i = i; this.payload = String(i).padStart(8, '0') + 't'.repeat(400); } }
globalThis.app = { sessionCache: new Map() };
globalThis.remember = (() => { const seen = []; return (x) => seen.push(x); })();
globalThis.bus = new EventEmitter();
bus.setMaxListeners(0);
bus.on('tick', () => {}); bus.on('tick', () => {});
function leak(i) {
  if (kind === 'map') app.sessionCache.set('s' + i, new LeakyEntry(i));
  else if (kind === 'closure') remember(new ClosureLeak(i));
  else { const obj = new ListenerLeak(i); bus.on('tick', function onTick() { return obj.i; }); }
}
let garbage = [];
v8.writeHeapSnapshot(dir + '/a.heapsnapshot');
for (let i = 0; i < count; i++) { leak(i); garbage.push(new Transient(i)); }
v8.writeHeapSnapshot(dir + '/b.heapsnapshot');
garbage = null;
for (let i = count; i < count + 200; i++) leak(i);
v8.writeHeapSnapshot(dir + '/c.heapsnapshot');
`;

export async function leakSnapshots(kind: LeakKind, count = 3000): Promise<string[]> {
  const dir = tempDir(`sysprobe-heap-${kind}-`);
  await promisify(execFile)(process.execPath, ['-e', SCRIPT, kind, dir, String(count)], { timeout: 60_000 });
  return ['a', 'b', 'c'].map((n) => path.join(dir, `${n}.heapsnapshot`));
}

/**
 * A tiny hand-written snapshot. Graph (self sizes in brackets):
 *
 *   root ─app→ App[10] ─b→ Beta[20] ─d→ Delta[40] ─e→ Eps[50]
 *                     └c→ Gamma[30] ─d→ Delta
 *              App ─weak→ Fox[60]                 (only weakly held)
 *
 * Dominators: App←root; Beta, Gamma, Delta←App; Eps←Delta; Fox←root (unreachable strongly).
 * Retained: Eps 50, Delta 90, Beta 20, Gamma 30, App 150, Fox 60, root 210.
 */
export function syntheticSnapshot(): string {
  const strings = ['', 'App', 'Beta', 'Gamma', 'Delta', 'Eps', 'Fox', 'app', 'b', 'c', 'd', 'e', 'f'];
  const S = (s: string): number => strings.indexOf(s);
  const types = { synthetic: 9, object: 3 };
  // node fields: type, name, id, self_size, edge_count
  const nodes = [
    [types.synthetic, S(''), 1, 0, 1],
    [types.object, S('App'), 3, 10, 3],
    [types.object, S('Beta'), 5, 20, 1],
    [types.object, S('Gamma'), 7, 30, 1],
    [types.object, S('Delta'), 9, 40, 1],
    [types.object, S('Eps'), 11, 50, 0],
    [types.object, S('Fox'), 13, 60, 0],
  ];
  const NF = 5;
  const P = 2,
    W = 6; // edge types: property, weak
  const edges = [
    [P, S('app'), 1 * NF],
    [P, S('b'), 2 * NF],
    [P, S('c'), 3 * NF],
    [W, S('f'), 6 * NF],
    [P, S('d'), 4 * NF],
    [P, S('d'), 4 * NF],
    [P, S('e'), 5 * NF],
  ];
  return JSON.stringify({
    snapshot: {
      meta: {
        node_fields: ['type', 'name', 'id', 'self_size', 'edge_count'],
        node_types: [
          [
            'hidden',
            'array',
            'string',
            'object',
            'code',
            'closure',
            'regexp',
            'number',
            'native',
            'synthetic',
            'concatenated string',
            'sliced string',
            'symbol',
            'bigint',
            'object shape',
          ],
          'string',
          'number',
          'number',
          'number',
        ],
        edge_fields: ['type', 'name_or_index', 'to_node'],
        edge_types: [
          ['context', 'element', 'property', 'internal', 'hidden', 'shortcut', 'weak'],
          'string_or_number',
          'node',
        ],
        location_fields: ['object_index', 'script_id', 'line', 'column'],
      },
      node_count: nodes.length,
      edge_count: edges.length,
      trace_function_count: 0,
    },
    nodes: nodes.flat(),
    edges: edges.flat(),
    trace_function_infos: [],
    trace_tree: [],
    samples: [],
    locations: [1, 4, 10, 2],
    strings,
  });
}

/** A snapshot of one chain root → Link → Link → … (`length` links, self size 1 each): a 200,000-deep dominator tree. */
export function chainSnapshot(length: number): string {
  const nodes: number[] = [9, 0, 1, 0, 1];
  const edges: number[] = [2, 2, 5];
  for (let i = 1; i <= length; i++) {
    const last = i === length;
    nodes.push(3, 1, 2 * i + 1, 1, last ? 0 : 1);
    if (!last) edges.push(2, 2, (i + 1) * 5);
  }
  const meta = JSON.parse(syntheticSnapshot()).snapshot.meta as unknown;
  return JSON.stringify({
    snapshot: { meta, node_count: length + 1, edge_count: length, trace_function_count: 0 },
    nodes,
    edges,
    strings: ['', 'Link', 'next'],
  });
}

/**
 * Runs `source` as a real module file named `fileName` (so its scripts carry that name) in a
 * child process and returns the three snapshots it writes. The source calls
 * `snapshot('a' | 'b' | 'c')`, which `PRELUDE` defines (in CommonJS or ESM).
 */
export async function moduleSnapshots(fileName: string, source: string): Promise<string[]> {
  const dir = tempDir('sysprobe-heap-module-');
  const esm = fileName.endsWith('.mjs');
  const prelude = esm
    ? `import { writeHeapSnapshot } from 'node:v8';\nconst snapshot = (name) => writeHeapSnapshot(process.argv[2] + '/' + name + '.heapsnapshot');\n`
    : `const { writeHeapSnapshot } = require('node:v8');\nconst snapshot = (name) => writeHeapSnapshot(process.argv[2] + '/' + name + '.heapsnapshot');\n`;
  const file = path.join(dir, fileName);
  fs.writeFileSync(file, prelude + source);
  await promisify(execFile)(process.execPath, [file, dir], { timeout: 60_000 });
  return ['a', 'b', 'c'].map((n) => path.join(dir, `${n}.heapsnapshot`));
}
