import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { promisify } from 'node:util';
import type { IncidentManifest } from '../src/index.js';
import { makeIncident, XSS_RULE } from './incident-helpers.js';
import { tempDir } from './helpers.js';
import { CHROMIUM_BIN, CHROMIUM as CHROMIUM_BROWSER, needs } from './requirements.js';

const run = promisify(execFile);
const CLI = path.join(__dirname, '..', 'src', 'cli', 'main.js');
const CHROMIUM = CHROMIUM_BIN;
const ARTIFACTS = path.join(__dirname, '..', '..', 'test-artifacts');
/** Names from the data that must show as text: if one ran, it would set window.__xss. */
const XSS_FUNCTION = '<script>window.__xss=2</script>';
const XSS_PATH = '"><img src=x onerror="window.__xss=3">';

/**
 * A copy of a real incident folder with what other branches add (heap-diff.json, manifest
 * dependencies) and XSS probes in a function name, a file path and table cells.
 */
async function realIncidentWithExtras(): Promise<string> {
  const made = await makeIncident();
  await made.probe.stop();
  const dir = tempDir('sysprobe-report-');
  fs.cpSync(made.dir, dir, { recursive: true });
  const manifest = JSON.parse(fs.readFileSync(path.join(dir, 'manifest.json'), 'utf8')) as IncidentManifest;
  const profileFile = path.join(dir, manifest.captures.find((c) => c.kind === 'cpu-profile')!.file);
  const profile = JSON.parse(fs.readFileSync(profileFile, 'utf8')) as {
    nodes: Array<{ id: number; callFrame: { functionName: string; url: string } }>;
    samples: number[];
  };
  // The JS function with the most samples (busyTurn or stallInJs, as the rule fired): the report surely shows it.
  const hits = new Map<number, number>();
  for (const id of profile.samples) hits.set(id, (hits.get(id) ?? 0) + 1);
  const busiest = profile.nodes
    .filter((n) => n.callFrame.url !== '')
    .reduce((a, b) => ((hits.get(b.id) ?? 0) > (hits.get(a.id) ?? 0) ? b : a));
  busiest.callFrame.functionName = XSS_FUNCTION;
  busiest.callFrame.url = XSS_PATH;
  fs.writeFileSync(profileFile, JSON.stringify(profile));
  manifest.dependencies = [
    {
      remoteAddress: '127.0.0.1',
      remotePort: 5432,
      hostnames: ['db<script>window.__xss=4</script>'],
      connections: 3,
      states: { ESTABLISHED: 3 },
      latencyMs: { p50: 1.2, p99: 9.5 },
      lastSeenAt: Date.now(),
    },
  ];
  fs.writeFileSync(path.join(dir, 'manifest.json'), JSON.stringify(manifest));
  fs.writeFileSync(
    path.join(dir, 'heap-diff.json'),
    JSON.stringify({
      files: ['a.heapsnapshot', 'b.heapsnapshot'],
      constructors: [
        {
          name: 'LeakyEntry<img src=x onerror="window.__xss=5">',
          countDelta: 1000,
          selfSizeDelta: 64_000,
          retainedSizeDelta: 1_048_576,
        },
        { name: 'Socket', countDelta: 1, selfSizeDelta: 296, retainedSizeDelta: 7_987 },
        { name: 'TimersList', countDelta: -2, selfSizeDelta: -160, retainedSizeDelta: -1_234_567_890 },
      ],
      // A long retainer path next to short columns: the case that once broke the headings letter by letter.
      leaks: [
        {
          constructor: 'SessionRecord',
          count: 12_345,
          selfSize: 1_023_999,
          retainedSize: 52_428_800,
          retainerPath:
            'global → CustomEvent() "CustomEvent" → context → process "process" → Object "_events" → message() → context → Map "sessionCache" → table → SessionRecord',
        },
      ],
    }),
  );
  return dir;
}

describe('sysprobe report', function () {
  this.timeout(60_000);
  let dir: string;
  before(async () => {
    dir = await realIncidentWithExtras();
  });

  it('writes report.html into the folder and prints its path; a bad folder exits 1 with a message', async () => {
    const { stdout } = await run(process.execPath, [CLI, 'report', dir]);
    assert.equal(stdout.trim(), path.join(dir, 'report.html'));
    const html = fs.readFileSync(path.join(dir, 'report.html'), 'utf8');
    assert.doesNotMatch(html, /(?:src|href)\s*=\s*["']?(?:https?:)?\/\//i, 'no external URLs');
    assert.ok(
      !html.includes(XSS_FUNCTION) && html.includes('&lt;script&gt;window.__xss=2&lt;/script&gt;'),
      'the function name is escaped',
    );
    assert.ok(!html.includes(XSS_RULE), 'the rule name is escaped');
    const bad = await run(process.execPath, [CLI, 'report', os.tmpdir()]).then(
      () => undefined,
      (err: { code: number; stderr: string }) => err,
    );
    assert.equal(bad?.code, 1);
    assert.match(bad?.stderr ?? '', /not an incident folder: it has no manifest\.json/);
    const missing = await run(process.execPath, [CLI, 'report', path.join(dir, 'nope')]).then(
      () => undefined,
      (err: { code: number; stderr: string }) => err,
    );
    assert.equal(missing?.code, 1);
    assert.match(missing?.stderr ?? '', /is not a directory/);
  });

  it('renders in headless chromium with no errors, no network, the charts and flame graph, and no script from the data', async function () {
    needs(this, CHROMIUM_BROWSER);
    const out = path.join(os.tmpdir(), `sysprobe-report-${process.pid}.html`);
    const { stdout } = await run(process.execPath, [CLI, 'report', dir, '--out', out]);
    assert.equal(stdout.trim(), out);
    const { chromium } = await import('playwright-core');
    const browser = await chromium.launch({ executablePath: CHROMIUM, args: ['--no-sandbox'] });
    try {
      const page = await browser.newPage({ viewport: { width: 1100, height: 900 } });
      const problems: string[] = [];
      page.on('console', (msg) => {
        if (msg.type() === 'error' || msg.type() === 'warning') problems.push(`console ${msg.type()}: ${msg.text()}`);
      });
      page.on('pageerror', (err) => problems.push(`page error: ${err.message}`));
      const requests: string[] = [];
      await page.route('**/*', async (route) => {
        const url = route.request().url();
        if (url.startsWith('file://') && url.endsWith(path.basename(out))) return route.continue();
        requests.push(url);
        await route.abort();
      });
      await page.goto(`file://${out}`);
      for (const id of ['#chart-delay', '#chart-cpu', '#chart-heap', '#chart-sockets'])
        assert.equal(await page.locator(id).count(), 1, id);
      assert.ok((await page.locator('#chart-cpu path.line').count()) === 1, 'the CPU chart has its line');
      assert.ok((await page.locator('#chart-delay line.mark.trigger').count()) >= 1, 'the trigger is marked');
      assert.ok((await page.locator('#chart-delay line.mark.capture').count()) >= 1, 'the captures are marked');
      const frames = await page.locator('#flamegraph g.fn').count();
      assert.ok(frames >= 3, `flame graph frames: ${frames}`);
      const titles = await page.locator('#flamegraph g.fn title').allTextContents();
      assert.ok(
        titles.some((t) => t.includes(XSS_FUNCTION)),
        'the XSS function name shows as text in its hover title',
      );
      assert.ok(
        (await page.locator('#stall .stack li').allTextContents()).some((t) => t.includes('stallInJs')),
        'the stall stack',
      );
      assert.match(await page.locator('#heap-diff').innerText(), /LeakyEntry<img src=x/);
      assert.match(await page.locator('#dependencies').innerText(), /127\.0\.0\.1:5432/);
      await page.locator('#flamegraph g.fn').first().hover();
      assert.notEqual(await page.locator('#hover').textContent(), '', 'hovering a frame shows it');
      assert.equal(
        await page.evaluate(() => (globalThis as { __xss?: number }).__xss),
        undefined,
        'no script from the data ran',
      );
      assert.equal(await page.locator('img').count(), 0, 'no element from the data');
      fs.mkdirSync(ARTIFACTS, { recursive: true });
      await page.screenshot({ path: path.join(ARTIFACTS, 'report.png'), fullPage: true });
      assert.deepEqual(problems, []);
      assert.deepEqual(requests, [], 'no network requests');
    } finally {
      await browser.close();
    }
  });

  it('at 1280×800 the tables read well: no heading broken letter by letter, sizes in human units (screenshot)', async function () {
    if (!fs.existsSync(CHROMIUM)) this.skip(); // reason: Debian's chromium is not installed (.ci/run installs it)
    const out = path.join(os.tmpdir(), `sysprobe-report-tables-${process.pid}.html`);
    await run(process.execPath, [CLI, 'report', dir, '--out', out]);
    const { chromium } = await import('playwright-core');
    const browser = await chromium.launch({ executablePath: CHROMIUM, args: ['--no-sandbox'] });
    try {
      const page = await browser.newPage({ viewport: { width: 1280, height: 800 } });
      await page.goto(`file://${out}`);
      fs.mkdirSync(ARTIFACTS, { recursive: true });
      await page.screenshot({ path: path.join(ARTIFACTS, 'report-1280x800.png'), fullPage: true });
      // Each heading: the lines it takes (its height over its line height), and whether its text fits its box.
      const headings = await page.locator('table th').evaluateAll((ths) => {
        // This runs in the page; the test's tsconfig has no DOM types, so the few used are named here.
        interface Box {
          width: number;
          height: number;
        }
        interface Page {
          getComputedStyle(el: unknown): { paddingLeft: string; paddingRight: string; lineHeight: string };
          document: { createRange(): { selectNodeContents(el: unknown): void; getBoundingClientRect(): Box } };
        }
        const page = globalThis as unknown as Page;
        return (ths as unknown as Array<{ clientWidth: number; textContent: string | null }>).map((th) => {
          const style = page.getComputedStyle(th);
          const range = page.document.createRange();
          range.selectNodeContents(th);
          const box = range.getBoundingClientRect();
          const inner = th.clientWidth - parseFloat(style.paddingLeft) - parseFloat(style.paddingRight);
          return {
            text: th.textContent ?? '',
            lines: Math.round(box.height / parseFloat(style.lineHeight)),
            textWidth: box.width,
            inner,
          };
        });
      });
      assert.ok(headings.length >= 10, `headings found: ${headings.length}`);
      for (const h of headings) {
        assert.ok(h.lines <= 2, `heading "${h.text}" takes ${h.lines} lines`);
        assert.ok(
          h.textWidth <= h.inner + 1,
          `heading "${h.text}" is ${h.textWidth.toFixed(0)} px wide in a ${h.inner.toFixed(0)} px column`,
        );
      }
      // Sizes: the heap diff's and the captures' size columns, each a number of at most 3 significant digits and a unit.
      const sizes = await page
        .locator(
          '#t-heap-diff td:nth-child(3), #t-heap-diff td:nth-child(4), #t-leaks td:nth-child(3), #t-leaks td:nth-child(4), #t-captures td:nth-child(3)',
        )
        .allTextContents();
      assert.ok(sizes.length >= 8, `size cells: ${sizes.length}`);
      for (const size of sizes) {
        const m = /^−?(\d+(?:\.\d+)?) (B|KiB|MiB|GiB|TiB)$/.exec(size);
        assert.ok(m, `"${size}" is a number and a unit (all: ${sizes.join(' | ')})`);
        assert.ok(
          m[1]!.replace('.', '').replace(/^0+/, '').length <= 3,
          `"${size}" has more than 3 significant digits`,
        );
      }
      assert.ok(sizes.includes('1.18 GiB') || sizes.includes('−1.15 GiB'), `large sizes in GiB: ${sizes.join(', ')}`);
      assert.ok(sizes.includes('296 B'), `small sizes in bytes: ${sizes.join(', ')}`);
    } finally {
      await browser.close();
    }
  });
});
