// Source maps and profile attribution, on a real TypeScript service compiled by tsc: the service
// runs in a child process, warms its ledger code until V8 optimizes (and inlines) it, then stalls
// in it. The stall stack must name the .ts file and line; a CPU profile a rule takes during the
// stall must name the function that spins, as the stall stack does.
import assert from 'node:assert/strict';
import { execFile, execFileSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { pathToFileURL } from 'node:url';
import { SourceMaps } from '../src/sourcemaps/source-maps.js';
import { promisify } from 'node:util';
import { kill, line, output, ROOT, spawnNode, type Child } from './children.js';
import { tempDir } from './helpers.js';
import { CHROMIUM, CHROMIUM_BIN, needs } from './requirements.js';

/** The service: a ledger job that spins in nudgeEntries (called by reconcileLedger, called by settlePayouts). */
const LEDGER_TS = `declare const require: (id: string) => any;
declare const process: { argv: string[]; exit(code: number): void };
const { start } = require(${JSON.stringify(path.join(ROOT, 'dist', 'src', 'index.js'))});
const pino = require(${JSON.stringify(path.join(ROOT, 'node_modules', 'pino'))});

type Ledger = number[] & { poisoned?: boolean };

/** One pass over the ledger; returns how far the books are from closing. */
function nudgeEntries(entries: Ledger): number {
  for (let i = 0; i < entries.length; i++) entries[i] = (entries[i]! * 31 + 7) % 1_000_003; // SPIN
  return entries.poisoned ? 1 : 0;
}

function reconcileLedger(entries: Ledger, budgetMs: number): number {
  const giveUpAt = Date.now() + budgetMs;
  let drift = 1;
  while (drift !== 0 && Date.now() < giveUpAt) drift = nudgeEntries(entries);
  return drift;
}

function settlePayouts(ms: number): number {
  const entries: Ledger = Array.from({ length: 2000 }, (_, i) => i);
  entries.poisoned = true;
  return reconcileLedger(entries, ms);
}

async function main(): Promise<void> {
  const probe = await start({
    dumpDir: process.argv[2], logger: pino({ level: 'silent' }), stallThresholdMs: 200, sampleIntervalMs: 100, defaultRules: false,
    rules: [{ name: 'stalled', value: 'eventLoop.lagMaxMs', above: 300, forMs: 0, cooldownMs: 60_000, actions: [{ captureCpuProfile: { durationMs: 600 } }] }],
  });
  const ruled = new Promise<void>((resolve) => probe.on('rule', (event: any) => {
    console.log('RULE ' + JSON.stringify(event.captures.cpuProfile?.summary ?? event.captures));
    resolve();
  }));
  // The long stall below (a warm-up turn on a loaded machine can stall too).
  const stalled = new Promise<void>((resolve) => probe.on('stall', (event: any) => {
    if (event.durationMs < 1000) return;
    console.log('STALL ' + JSON.stringify(event.stack));
    resolve();
  }));
  for (let i = 0; i < 40; i++) { // warm: optimized, with nudgeEntries inlined; a turn of the loop each, so no stall yet
    settlePayouts(5);
    await new Promise((resolve) => setTimeout(resolve, 0));
  }
  await new Promise((resolve) => setTimeout(resolve, 300));
  settlePayouts(2000);
  const keepAlive = setInterval(() => undefined, 1000); // until both events came
  await Promise.all([stalled, ruled]);
  clearInterval(keepAlive);
  await probe.stop();
}
void main();
`;

interface ShownFrame {
  functionName: string;
  url: string;
  lineNumber: number;
  columnNumber: number;
  generated?: { url: string; lineNumber: number; columnNumber: number };
}

describe('source maps: positions in the TypeScript a person wrote', function () {
  this.timeout(120_000);
  const dir = tempDir('sysprobe-sourcemaps-');
  const spinLine = LEDGER_TS.split('\n').findIndex((l) => l.includes('// SPIN')); // 0-based
  let child: Child | undefined;

  before(() => {
    for (const [name, flag] of [
      ['mapped', '--sourceMap'],
      ['inline', '--inlineSourceMap'],
    ] as const) {
      const src = path.join(dir, name);
      fs.mkdirSync(src);
      fs.writeFileSync(path.join(src, 'ledger.ts'), LEDGER_TS);
      try {
        execFileSync(
          process.execPath,
          [
            path.join(ROOT, 'node_modules', 'typescript', 'bin', 'tsc'),
            flag,
            '--target',
            'es2022',
            '--module',
            'commonjs',
            '--strict',
            '--outDir',
            path.join(src, 'out'),
            path.join(src, 'ledger.ts'),
          ],
          { encoding: 'utf8', cwd: src },
        );
      } catch (err) {
        throw new Error(`tsc failed: ${String((err as { stdout?: string }).stdout)}`);
      }
    }
    assert.ok(fs.existsSync(path.join(dir, 'mapped', 'out', 'ledger.js.map')), 'tsc wrote the .map file');
  });

  afterEach(async () => kill(child));

  async function runService(
    name: string,
  ): Promise<{ stack: ShownFrame[]; summary: { topFunctions: ShownFrame[] }; dumpDir: string }> {
    const dumpDir = path.join(dir, `${name}-dumps-${Date.now()}`);
    child = spawnNode([path.join(dir, name, 'out', 'ledger.js'), dumpDir]);
    const stall = await line(child, /^STALL (.*)$/m, 30_000);
    const rule = await line(child, /^RULE (.*)$/m, 30_000);
    return {
      stack: JSON.parse(stall[1]!) as ShownFrame[],
      summary: JSON.parse(rule[1]!) as { topFunctions: ShownFrame[] },
      dumpDir,
    };
  }

  it("the report's flame graph shows the .ts positions (from the profile's sidecar); the .cpuprofile stays as V8 wrote it", async function () {
    needs(this, CHROMIUM);
    const { dumpDir } = await runService('mapped');
    const exited = child!.exited()
      ? Promise.resolve()
      : new Promise<void>((resolve) => child!.proc.once('exit', () => resolve()));
    await Promise.race([exited, new Promise((resolve) => setTimeout(resolve, 15_000))]);
    assert.ok(child!.exited(), `the service stopped its probe and exited\n${output(child)}`);
    const incidents = path.join(dumpDir, 'incidents');
    const [incident] = fs.readdirSync(incidents).filter((n) => fs.statSync(path.join(incidents, n)).isDirectory());
    const folder = path.join(incidents, incident!);
    const profileName = fs.readdirSync(folder).find((n) => n.endsWith('.cpuprofile'))!;
    const profile = JSON.parse(fs.readFileSync(path.join(folder, profileName), 'utf8')) as {
      nodes: Array<{ callFrame: { url: string } }>;
    };
    assert.ok(
      profile.nodes.some((n) => n.callFrame.url.endsWith('/out/ledger.js')) &&
        !profile.nodes.some((n) => n.callFrame.url.endsWith('.ts')),
      'the .cpuprofile keeps the generated positions',
    );
    const out = path.join(dir, `report-${Date.now()}.html`);
    await promisify(execFile)(process.execPath, [
      path.join(ROOT, 'dist', 'src', 'cli', 'main.js'),
      'report',
      folder,
      '--out',
      out,
    ]);
    const { chromium } = await import('playwright-core');
    const browser = await chromium.launch({ executablePath: CHROMIUM_BIN, args: ['--no-sandbox'] });
    try {
      const page = await browser.newPage({ viewport: { width: 1100, height: 900 } });
      await page.goto(pathToFileURL(out).href);
      const titles = await page.locator('#flamegraph g.fn title').allTextContents();
      const tsFile = pathToFileURL(path.join(dir, 'mapped', 'ledger.ts')).href;
      const spin = titles.find((t) => t.startsWith('nudgeEntries '));
      assert.ok(spin, `the flame graph has nudgeEntries: ${titles.join('\n')}`);
      assert.ok(
        // A profile node is at its function's declaration: the line above the spinning one.
        spin.startsWith(`nudgeEntries ${tsFile}:${spinLine}:`),
        `nudgeEntries at its declaration, .ts line ${spinLine}: ${spin}`,
      );
      assert.match(spin, /\(generated file:.*\/out\/ledger\.js:\d+:\d+\)/, 'the generated position beside it');
      for (const fn of ['reconcileLedger', 'settlePayouts'])
        assert.ok(
          titles.some((t) => t.startsWith(`${fn} ${tsFile}:`)),
          `${fn} at its .ts position: ${titles.join('\n')}`,
        );
    } finally {
      await browser.close();
    }
  });

  for (const name of ['mapped', 'inline']) {
    it(`${name === 'mapped' ? 'a .map file' : 'an inline data: URL'}: the stall's top frame names the .ts file and its line, the generated position beside it`, async () => {
      const { stack } = await runService(name);
      const top = stack[0]!;
      assert.equal(top.functionName, 'nudgeEntries', output(child));
      assert.equal(top.url, pathToFileURL(path.join(dir, name, 'ledger.ts')).href);
      assert.equal(top.lineNumber, spinLine);
      assert.ok(top.generated?.url.endsWith('/out/ledger.js'), `generated position kept: ${JSON.stringify(top)}`);
      assert.deepEqual(
        stack.slice(0, 3).map((f) => f.functionName),
        ['nudgeEntries', 'reconcileLedger', 'settlePayouts'],
      );
      assert.ok(stack.slice(0, 3).every((f) => f.url.endsWith('ledger.ts')));
    });
  }

  it('a CPU profile taken during the stall names the function that spins, as the stall stack does (5 runs)', async () => {
    const tops: string[] = [];
    for (let run = 0; run < 5; run++) {
      const { stack, summary } = await runService('mapped');
      await kill(child);
      // The heaviest function: V8's synthetic entries ('(idle)' once the stall is over, '(program)') are not one.
      const top = summary.topFunctions.find((f) => !/^\(.*\)$/.test(f.functionName))!;
      tops.push(`${top.functionName} (stall: ${stack[0]?.functionName})`);
      assert.equal(
        top.functionName,
        stack[0]!.functionName,
        `run ${run}: ${JSON.stringify(summary.topFunctions.slice(0, 3))}`,
      );
      assert.ok(
        top.url.endsWith('ledger.ts'),
        `the summary's top function is at its original position: ${JSON.stringify(top)}`,
      );
    }
    assert.equal(tops.length, 5);
  });
});

describe('SourceMaps: what cannot be resolved keeps the generated position', () => {
  const dir = tempDir('sysprobe-badmaps-');
  const frame = (file: string) => ({
    functionName: 'f',
    url: pathToFileURL(file).href,
    lineNumber: 0,
    columnNumber: 4,
  });

  it('a missing map and a broken map leave the frame as it was', async () => {
    const missing = path.join(dir, 'missing.js');
    fs.writeFileSync(missing, 'function f() {}\n//# sourceMappingURL=missing.js.map\n');
    const broken = path.join(dir, 'broken.js');
    fs.writeFileSync(broken, 'function f() {}\n//# sourceMappingURL=broken.js.map\n');
    fs.writeFileSync(`${broken}.map`, '{"version":3,"sources":["a.ts"],"mappings":');
    const maps = new SourceMaps();
    const [a, b] = await maps.resolve([frame(missing), frame(broken)]);
    assert.deepEqual(a, frame(missing));
    assert.deepEqual(b, frame(broken));
  });

  it('refuses a map over the size bound, quickly', async () => {
    const script = path.join(dir, 'huge.js');
    fs.writeFileSync(script, 'function f() {}\n//# sourceMappingURL=huge.js.map\n');
    const segments = 'AAAA,'.repeat(600_000); // ~3 MB of real mappings
    fs.writeFileSync(
      `${script}.map`,
      JSON.stringify({ version: 3, sources: ['huge.ts'], names: [], mappings: segments }),
    );
    const maps = new SourceMaps({ maxMapBytes: 1 << 20 });
    const startedAt = performance.now();
    const [resolved] = await maps.resolve([frame(script)]);
    assert.deepEqual(resolved, frame(script));
    assert.ok(performance.now() - startedAt < 500, 'refused by its size, without reading it');
    // The same map within a larger bound resolves, so the refusal above was the bound's doing.
    const [within] = await new SourceMaps({ maxMapBytes: 8 << 20 }).resolve([frame(script)]);
    assert.ok(within!.url.endsWith('huge.ts'), JSON.stringify(within));
  });
});
