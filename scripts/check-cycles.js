#!/usr/bin/env node
/**
 * Fails when modules import each other in a circle. Two graphs are checked:
 * - runtime: the `require()` calls of the compiled dist/src (what Node loads; the contract);
 * - types: every relative import and re-export of src/*.ts, `import type` included, so a
 *   type-level circle cannot turn into a runtime one with the next edit.
 * Usage: node scripts/check-cycles.js (after `npm run build`). Exit 1 names each cycle.
 */
'use strict';
const fs = require('node:fs');
const path = require('node:path');

const ROOT = path.resolve(__dirname, '..');

function files(dir, ext) {
  const out = [];
  for (const entry of fs.readdirSync(dir, { withFileTypes: true })) {
    const full = path.join(dir, entry.name);
    if (entry.isDirectory()) out.push(...files(full, ext));
    else if (entry.name.endsWith(ext) && !entry.name.endsWith('.d.ts')) out.push(full);
  }
  return out;
}

/** Module → the modules it names, for specifiers that start with '.'. */
function graph(dir, ext, pattern, toFile) {
  const edges = new Map();
  for (const file of files(dir, ext)) {
    const text = fs.readFileSync(file, 'utf8');
    const targets = new Set();
    for (const match of text.matchAll(pattern)) {
      const spec = match[1];
      if (!spec.startsWith('.')) continue;
      const target = toFile(path.resolve(path.dirname(file), spec));
      if (fs.existsSync(target)) targets.add(target);
    }
    edges.set(file, targets);
  }
  return edges;
}

/** Tarjan's strongly connected components: each component of more than one module (or a self-import) is a cycle. */
function cycles(edges) {
  let index = 0;
  const stack = [];
  const state = new Map();
  const found = [];
  const visit = (v) => {
    state.set(v, { index, low: index, onStack: true });
    index += 1;
    stack.push(v);
    for (const w of edges.get(v) ?? []) {
      if (!state.has(w)) {
        visit(w);
        state.get(v).low = Math.min(state.get(v).low, state.get(w).low);
      } else if (state.get(w).onStack) {
        state.get(v).low = Math.min(state.get(v).low, state.get(w).index);
      }
    }
    if (state.get(v).low === state.get(v).index) {
      const component = [];
      let w;
      do {
        w = stack.pop();
        state.get(w).onStack = false;
        component.push(w);
      } while (w !== v);
      if (component.length > 1 || (edges.get(v) ?? new Set()).has(v)) found.push(component);
    }
  };
  for (const v of edges.keys()) if (!state.has(v)) visit(v);
  return found;
}

const dist = path.join(ROOT, 'dist', 'src');
if (!fs.existsSync(dist)) {
  console.error('check-cycles: dist/src is missing; run `npm run build` first.');
  process.exit(2);
}
const checks = [
  ['runtime require() cycle in dist/src', graph(dist, '.js', /require\("([^"]+)"\)/g, (f) => f)],
  [
    'import cycle (types included) in src',
    graph(path.join(ROOT, 'src'), '.ts', /(?:from|import\()\s*'([^']+)'/g, (f) => f.replace(/\.js$/, '.ts')),
  ],
];
let failed = false;
for (const [what, edges] of checks) {
  for (const component of cycles(edges)) {
    failed = true;
    console.error(
      `${what}: ${component
        .map((f) => path.relative(ROOT, f))
        .sort()
        .join(' <-> ')}`,
    );
  }
}
if (failed) process.exit(1);
console.log(`check-cycles: no import cycles (${checks.map(([, e]) => e.size).join(' compiled, ')} source modules)`);
