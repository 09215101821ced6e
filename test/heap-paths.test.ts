import assert from 'node:assert/strict';
import { diff } from '../src/heap/analysis.js';
import { renderDiff } from '../src/cli/heap.js';
import { moduleSnapshots } from './heap-fixtures.js';

/** What Node's own machinery looks like in a path: the loaders, timer lists, its generators. */
const NODE_INTERNALS =
  /ModuleLoader|ModuleJob|ModuleWrap|LoadCache|cascadedLoader|requireBuiltin|BuiltinModule|TimersList|timerListMap|Generator|CustomEvent|_onTimeout|\(GC roots\)|system \//;

/** Each leaked object carries a unique 200-byte string, so 3000 of them are well above the noise floor. */
const LEAKY = `class Widget { constructor(i) { this.i = i; this.payload = String(i).padStart(8, '0') + 'w'.repeat(192); } }\n`;
const STEPS = (source: string): string => `${LEAKY}${source}
snapshot('a');
for (let i = 0; i < 3000; i++) leak(new Widget(i));
snapshot('b');
for (let i = 3000; i < 3100; i++) leak(new Widget(i));
snapshot('c');
`;

const cases: Array<[string, string, string, RegExp]> = [
  [
    'a CommonJS module-level Map',
    'orders.js',
    `
const widgetRegistry = new Map();
setInterval(() => widgetRegistry.size, 1e6).unref();
const leak = (w) => widgetRegistry.set(w.i, w);`,
    /^module orders\.js → Map "widgetRegistry" → Widget$/,
  ],
  [
    'an ES module-level Map',
    'orders.mjs',
    `
const widgetRegistry = new Map();
export const leak = (w) => widgetRegistry.set(w.i, w);`,
    /^module orders\.mjs → Map "widgetRegistry" → Widget$/,
  ],
  [
    'an array a closure holds',
    'recorder.js',
    `
function makeRecorder() { const seen = []; return (x) => seen.push(x); }
const record = makeRecorder();
setInterval(() => record, 1e6).unref();
const leak = (w) => record(w);`,
    /^module recorder\.js → record\(\) → context → Array "seen" → Widget$/,
  ],
  [
    'a class static',
    'registry.js',
    `
class Registry { static items = []; }
setInterval(() => Registry, 1e6).unref();
const leak = (w) => Registry.items.push(w);`,
    /^module registry\.js → Registry\(\) → Array "items" → Widget$/,
  ],
  [
    'an event listener the app added',
    'bus.js',
    `
const { EventEmitter } = require('node:events');
const bus = new EventEmitter();
bus.setMaxListeners(0);
setInterval(() => bus.emit('tick'), 1e6).unref();
bus.on('tick', () => {}); bus.on('tick', () => {}); // the listeners' array exists before the leak
const leak = (w) => bus.on('tick', function onTick() { return w.i; });`,
    /^module bus\.js → EventEmitter "bus" → Object "_events" → Array "tick" → onTick\(\) → context → Widget "w"$/,
  ],
];

describe('heap retainer paths read as code (real scripts, snapshots taken in child processes)', function () {
  this.timeout(120_000);

  for (const [what, fileName, source, expected] of cases) {
    it(`${what}: the path starts at the module's scope, names its file, is at most 8 steps and has no Node internals`, async () => {
      const d = await diff(await moduleSnapshots(fileName, STEPS(source)));
      const first = d.leaks[0];
      assert.equal(first?.constructor, 'Widget', `the leak is named first: ${JSON.stringify(d.leaks.slice(0, 3))}`);
      assert.equal(d.leakFound, true);
      const path = first.retainerPath;
      assert.ok(path.split(' → ').length <= 8, `at most 8 steps: ${path}`);
      assert.ok(path.includes(fileName), `names ${fileName}: ${path}`);
      assert.doesNotMatch(path, NODE_INTERNALS, 'no Node internals');
      assert.match(path, expected);
    });
  }

  it('a steady process (work, garbage, a bounded cache; no leak): "no leak found", and a real leak is named first', async () => {
    const steady = await moduleSnapshots(
      'steady.js',
      `
const cache = new Map();
function work(n) {
  for (let i = 0; i < n; i++) {
    const request = { id: i, body: 'x'.repeat(100 + (i % 50)), headers: { host: 'h' + (i % 7) } };
    cache.set(i % 500, { at: i, size: request.body.length });
    JSON.stringify(request);
  }
}
work(20000);
snapshot('a');
work(20000);
snapshot('b');
work(20000);
snapshot('c');
`,
    );
    const d = await diff(steady);
    assert.equal(d.leakFound, false, `no leak: ${JSON.stringify(d.leaks.slice(0, 3))}, growth ${d.heapGrowth}`);
    assert.deepEqual(d.leaks, []);
    const text = renderDiff(d, 20);
    assert.match(text, /no leak found/);
    assert.doesNotMatch(text, /likely leaks/);
    assert.doesNotMatch(text, /\d\.\d{4,}/, 'sizes in human units, not long fractions');

    const leaking = await diff(
      await moduleSnapshots(
        'leaking.js',
        STEPS(`const kept = new Map(); setInterval(() => kept, 1e6).unref(); const leak = (w) => kept.set(w.i, w);`),
      ),
    );
    assert.equal(leaking.leakFound, true);
    assert.equal(leaking.leaks[0]?.constructor, 'Widget');
    assert.match(
      renderDiff(leaking, 20),
      /likely leaks[^\n]*\n\s+1\. Widget ×3000 {2}retained \d+(\.\d)? kB, self \d+(\.\d)? kB\n\s+module leaking\.js → Map "kept" → Widget/,
    );
  });
});
