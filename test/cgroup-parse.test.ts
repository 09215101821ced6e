import assert from 'node:assert/strict';
import { Worker } from 'node:worker_threads';
import * as fs from 'node:fs';
import * as path from 'node:path';
import {
  locateCgroup,
  parseCgroupMounts,
  parseCpu,
  parseFlatKeyed,
  parseMemory,
  parseProcCgroup,
} from '../src/containers/cgroup-parse.js';
import { CgroupReader } from '../src/containers/cgroup-reader.js';
import { cgroupValues, cpuShareOfAvailable, throttledBetween } from '../src/containers/cgroup-values.js';
import { tempDir } from './helpers.js';

const FIXTURES = path.join(__dirname, '..', '..', 'test', 'fixtures', 'cgroup');
const fixture = (name: string) => path.join(FIXTURES, name);
const read = (name: string, file: string) => fs.readFileSync(path.join(FIXTURES, name, file), 'utf8');

describe('cgroup parsers', () => {
  it('reads /proc/self/cgroup lines of v1 and v2, including a path with colons', () => {
    const { value, problems } = parseProcCgroup('4:memory:/a:b\n2:cpu,cpuacct:/x\n0::/\n');
    assert.deepEqual(problems, []);
    assert.deepEqual(value, [
      { hierarchy: 4, controllers: ['memory'], path: '/a:b' },
      { hierarchy: 2, controllers: ['cpu', 'cpuacct'], path: '/x' },
      { hierarchy: 0, controllers: [], path: '/' },
    ]);
  });

  it('reads the cgroup mounts of mountinfo (octal escapes, optional fields) and skips other file systems', () => {
    const text =
      '26 1 254:0 / / rw - ext4 /dev/vda rw\n' +
      '716 712 0:33 /docker/a /sys/fs/cgroup/cpu,cpuacct ro,relatime master:17 - cgroup cgroup rw,cpu,cpuacct\n' +
      '40 30 0:37 / /sys/fs/cgroup/with\\040space rw shared:4 shared:5 - cgroup2 cgroup2 rw,nsdelegate\n';
    const { value, problems } = parseCgroupMounts(text);
    assert.deepEqual(problems, []);
    assert.deepEqual(value, [
      { version: 1, root: '/docker/a', mountPoint: '/sys/fs/cgroup/cpu,cpuacct', controllers: ['cpu', 'cpuacct'] },
      { version: 2, root: '/', mountPoint: '/sys/fs/cgroup/with space', controllers: [] },
    ]);
  });

  it('finds the controllers of a hybrid machine (recorded here) on its v1 hierarchies', () => {
    const location = locateCgroup(read('hybrid', 'proc/self/cgroup'), read('hybrid', 'proc/self/mountinfo'));
    assert.deepEqual(location, {
      cpu: { version: 1, dir: '/sys/fs/cgroup/cpu' },
      memory: { version: 1, dir: '/sys/fs/cgroup/memory/process_api/cffaee89fed94313a4f69f7c21b7f2e8' },
      problems: [],
    });
  });

  it('maps a cgroup path under a mount whose root is the container itself (v1 without a namespace)', () => {
    const location = locateCgroup(read('v1', 'proc/self/cgroup'), read('v1', 'proc/self/mountinfo'));
    assert.deepEqual(location.cpu, { version: 1, dir: '/sys/fs/cgroup/cpu,cpuacct' });
    assert.deepEqual(location.memory, { version: 1, dir: '/sys/fs/cgroup/memory' });
  });

  it('finds v2 with and without a cgroup namespace, and nothing where no cgroup is mounted', () => {
    assert.deepEqual(locateCgroup(read('v2', 'proc/self/cgroup'), read('v2', 'proc/self/mountinfo')).memory, {
      version: 2,
      dir: '/sys/fs/cgroup',
    });
    assert.deepEqual(
      locateCgroup(read('v2-unlimited', 'proc/self/cgroup'), read('v2-unlimited', 'proc/self/mountinfo')).cpu,
      { version: 2, dir: '/sys/fs/cgroup/kubepods.slice/kubepods-burstable.slice/cri-containerd-9e8d.scope' },
    );
    assert.deepEqual(locateCgroup(read('none', 'proc/self/cgroup'), read('none', 'proc/self/mountinfo')), {
      problems: [],
    });
  });

  it('says when the cgroup is outside the mount it would be read through', () => {
    const location = locateCgroup(
      '3:memory:/elsewhere\n',
      '1 0 0:1 /docker/a /sys/fs/cgroup/memory rw - cgroup cgroup rw,memory\n',
    );
    assert.equal(location.memory, undefined);
    assert.match(location.problems.join(), /memory: cgroup \/elsewhere is outside the mount's root \/docker\/a/);
  });

  it('reads v2 quota, throttling, limit, peak and OOM kills', () => {
    const cpu = parseCpu(2, { 'cpu.max': '50000 100000\n', 'cpu.stat': read('v2', 'sys/fs/cgroup/cpu.stat') });
    assert.deepEqual(cpu, {
      value: {
        version: 2,
        periodUs: 100000,
        quotaCores: 0.5,
        periods: 30000,
        throttledPeriods: 4500,
        throttledMs: 123456.789,
      },
      problems: [],
    });
    const memory = parseMemory(2, {
      'memory.max': '536870912\n',
      'memory.current': '402653184\n',
      'memory.peak': '530579456\n',
      'memory.events': read('v2', 'sys/fs/cgroup/memory.events'),
    });
    assert.deepEqual(memory, {
      value: {
        version: 2,
        limitBytes: 536870912,
        usageBytes: 402653184,
        peakBytes: 530579456,
        oomKills: 2,
        oomEvents: 2,
      },
      problems: [],
    });
  });

  it('reads v1 quota (throttled_time in ns), limit, failcnt and oom_kill', () => {
    const dir = 'sys/fs/cgroup/cpu,cpuacct';
    const cpu = parseCpu(1, {
      'cpu.cfs_quota_us': '150000\n',
      'cpu.cfs_period_us': '100000\n',
      'cpu.stat': read('v1', `${dir}/cpu.stat`),
    });
    assert.deepEqual(cpu.value, {
      version: 1,
      periodUs: 100000,
      quotaCores: 1.5,
      periods: 5210,
      throttledPeriods: 731,
      throttledMs: 48211.345678,
    });
    const memory = parseMemory(1, {
      'memory.limit_in_bytes': '268435456\n',
      'memory.usage_in_bytes': '201326592\n',
      'memory.max_usage_in_bytes': '268419072\n',
      'memory.oom_control': 'oom_kill_disable 0\nunder_oom 0\noom_kill 1\n',
      'memory.failcnt': '3042\n',
    });
    assert.deepEqual(memory, {
      value: {
        version: 1,
        limitBytes: 268435456,
        usageBytes: 201326592,
        peakBytes: 268419072,
        oomKills: 1,
        limitHits: 3042,
      },
      problems: [],
    });
  });

  it('reads unlimited as no limit: v2 max, v1 -1 and the page counter maximum', () => {
    assert.equal(parseCpu(2, { 'cpu.max': 'max 100000\n' }).value.quotaCores, undefined);
    assert.equal(
      parseCpu(1, { 'cpu.cfs_quota_us': '-1\n', 'cpu.cfs_period_us': '100000\n' }).value.quotaCores,
      undefined,
    );
    assert.equal(parseMemory(2, { 'memory.max': 'max\n' }).value.limitBytes, undefined);
    assert.equal(parseMemory(1, { 'memory.limit_in_bytes': '9223372036854771712\n' }).value.limitBytes, undefined);
    // 64 KiB pages give a different maximum; still unlimited.
    assert.equal(parseMemory(1, { 'memory.limit_in_bytes': '9223372036854710272\n' }).value.limitBytes, undefined);
    for (const result of [
      parseCpu(2, { 'cpu.max': 'max 100000' }),
      parseMemory(1, { 'memory.limit_in_bytes': '9223372036854771712' }),
    ]) {
      assert.deepEqual(result.problems, []);
    }
  });

  it('takes a smaller limit from a v1 parent (hierarchical_memory_limit), and the working set without inactive file cache', () => {
    const memory = parseMemory(1, {
      'memory.limit_in_bytes': '9223372036854771712',
      'memory.usage_in_bytes': '1000',
      'memory.stat': 'cache 10\nhierarchical_memory_limit 4096\ninactive_file 1\ntotal_inactive_file 300\n',
    });
    assert.deepEqual(memory, {
      value: { version: 1, limitBytes: 4096, usageBytes: 1000, workingSetBytes: 700 },
      problems: [],
    });
  });

  it('reads an old kernel without oom_kill in oom_control', () => {
    const memory = parseMemory(1, { 'memory.oom_control': 'oom_kill_disable 0\nunder_oom 0\n' });
    assert.deepEqual(memory, { value: { version: 1 }, problems: [] });
  });

  it('names each malformed line or value and keeps the rest', () => {
    const keyed = parseFlatKeyed('cpu.stat', 'nr_periods 4\nnr_throttled x\n\nlonely\nthrottled_usec 7 8\n');
    assert.deepEqual([...keyed.value], [['nr_periods', 4]]);
    assert.equal(keyed.problems.length, 3);
    const cpu = parseCpu(2, {
      'cpu.max': 'lots 100000\n',
      'cpu.stat': 'nr_periods 40\nnr_throttled twelve\nthrottled_usec 5000\n',
    });
    assert.deepEqual(cpu.value, { version: 2, periods: 40, throttledMs: 5 });
    assert.deepEqual(cpu.problems, [
      'cpu.stat: unreadable line "nr_throttled twelve"',
      'cpu.max: unreadable: "lots 100000"',
    ]);
    for (const bad of ['', '1.5', '12abc', '-5', '0x10', '99999999999999999999999']) {
      const memory = parseMemory(2, { 'memory.max': bad, 'memory.current': '10' });
      assert.deepEqual(memory.value, { version: 2, usageBytes: 10 }, JSON.stringify(bad));
      assert.equal(memory.problems.length, 1, JSON.stringify(bad));
      assert.match(memory.problems[0]!, /^memory\.max: not a number/);
    }
    assert.deepEqual(parseCpu(1, { 'cpu.cfs_quota_us': '-7', 'cpu.cfs_period_us': '0' }).problems, [
      'cpu.cfs_period_us: 0',
    ]);
    assert.deepEqual(parseCpu(1, { 'cpu.cfs_quota_us': '-7', 'cpu.cfs_period_us': '100000' }).problems, [
      'cpu.cfs_quota_us: unexpected value -7',
    ]);
    const procCgroup = parseProcCgroup('garbage\n0::/app\nx:cpu:/\n1:cpu:relative\n');
    assert.deepEqual(procCgroup.value, [{ hierarchy: 0, controllers: [], path: '/app' }]);
    assert.equal(procCgroup.problems.length, 3);
  });
});

describe('cgroup reader on recorded trees', () => {
  it('reads the hybrid machine: no CPU quota, an unlimited nested memory cgroup', async () => {
    const reading = await new CgroupReader({ root: fixture('hybrid') }).read();
    assert.deepEqual(reading.cpu, { version: 1, periodUs: 100000, periods: 0, throttledPeriods: 0, throttledMs: 0 });
    assert.deepEqual(reading.memory, {
      version: 1,
      usageBytes: 51916800,
      workingSetBytes: 51916800 - 19632128,
      peakBytes: 1055047680,
      oomKills: 0,
      limitHits: 0,
    });
    assert.equal(reading.problems, undefined);
  });

  it('reads v1, v2 and v2-unlimited trees the same way synchronously and asynchronously', async () => {
    for (const name of ['v1', 'v2', 'v2-unlimited']) {
      const reader = new CgroupReader({ root: fixture(name) });
      const [a, b] = [await reader.read(), reader.readSync()];
      assert.deepEqual({ ...a, time: 0 }, { ...b, time: 0 }, name);
      assert.equal(a.problems, undefined, name);
    }
    const v2 = await new CgroupReader({ root: fixture('v2') }).read();
    assert.equal(v2.cpu?.quotaCores, 0.5);
    assert.equal(v2.memory?.limitBytes, 512 * 1024 * 1024);
    assert.equal(v2.memory?.oomKills, 2);
    assert.equal(v2.memory?.workingSetBytes, 402653184 - 100663296);
    assert.equal(new CgroupReader({ root: fixture('v1') }).readSync().memory?.workingSetBytes, 201326592 - 50331648);
    const unlimited = new CgroupReader({ root: fixture('v2-unlimited') }).readSync();
    assert.deepEqual(unlimited.memory, { version: 2, usageBytes: 73400320, oomKills: 0, oomEvents: 0 });
    assert.equal(unlimited.cpu?.quotaCores, undefined);
  });

  it('has nothing to read where no cgroup is mounted', async () => {
    const reader = new CgroupReader({ root: fixture('none') });
    assert.equal(reader.supported, false);
    assert.deepEqual({ ...(await reader.read()), time: 0 }, { time: 0 });
  });

  it('keeps what it could read from a malformed tree and names the rest', async () => {
    const reader = new CgroupReader({ root: fixture('malformed') });
    assert.deepEqual(reader.location.cpu, { version: 2, dir: '/sys/fs/cgroup/app' });
    assert.equal(reader.location.problems.length, 3, reader.location.problems.join('\n'));
    const reading = await reader.read();
    assert.deepEqual(reading.cpu, { version: 2, periods: 40, throttledMs: 5 });
    assert.deepEqual(reading.memory, { version: 2, usageBytes: 1048576, oomEvents: 1 });
    assert.deepEqual(reading.problems?.map((p) => p.split(':')[0]).sort(), [
      'cpu.max',
      'cpu.stat',
      'cpu.stat',
      'memory.events',
      'memory.max',
    ]);
  });

  it('bounds file sizes and refuses to follow a symlink planted in the tree', async () => {
    const root = tempDir('sysprobe-cgroup-');
    fs.cpSync(fixture('v2'), root, { recursive: true });
    fs.writeFileSync(path.join(root, 'sys/fs/cgroup/memory.events'), 'oom 0\n'.repeat(20_000));
    fs.rmSync(path.join(root, 'sys/fs/cgroup/memory.current'));
    fs.symlinkSync('/etc/hostname', path.join(root, 'sys/fs/cgroup/memory.current'));
    const reading = await new CgroupReader({ root, maxFileBytes: 4096 }).read();
    assert.deepEqual(reading.problems?.sort(), ['memory.current: ELOOP', 'memory.events: larger than 4096 bytes']);
    assert.equal(reading.memory?.limitBytes, 536870912);
    assert.equal(reading.memory?.usageBytes, undefined);
  });

  it('skips a file that is a FIFO at once (never waits on it) and returns the rest', async function () {
    const root = tempDir('sysprobe-cgroup-');
    fs.cpSync(fixture('v2'), root, { recursive: true });
    fs.rmSync(path.join(root, 'sys/fs/cgroup/memory.peak'));
    require('node:child_process').execFileSync('mkfifo', [path.join(root, 'sys/fs/cgroup/memory.peak')]);
    const started = performance.now();
    const reading = await new CgroupReader({ root }).read();
    assert.ok(performance.now() - started < 500);
    assert.deepEqual(reading.problems, ['memory.peak: not a regular file']);
    assert.equal(reading.memory?.usageBytes, 402653184);
  });

  it('a worker terminated while it reads the controllers leaves no descriptor open (20 terminations)', async function () {
    this.timeout(30_000);
    const reader = path.resolve(__dirname, '..', 'src', 'containers', 'cgroup-reader.js');
    const code = `
      const { CgroupReader } = require(${JSON.stringify(reader)});
      const reader = new CgroupReader({ root: ${JSON.stringify(fixture('v2'))} });
      require('node:worker_threads').parentPort.postMessage('go');
      (async () => { for (;;) { await reader.read(); await reader.readCpu(); } })();
    `;
    const fds = () => fs.readdirSync('/proc/self/fd').length;
    const before = fds();
    for (let i = 0; i < 20; i++) {
      const worker = new Worker(code, { eval: true });
      await new Promise((resolve) => worker.once('message', resolve));
      await new Promise((resolve) => setTimeout(resolve, 30 + (i % 7) * 7));
      await worker.terminate();
    }
    await new Promise((resolve) => setTimeout(resolve, 300));
    // Async opens still on the thread pool at termination left ~2 per worker (40 here); synchronous reads leave
    // only the rare termination that lands between an open and its close.
    assert.ok(fds() - before <= 4, `${fds() - before} descriptors left open by 20 terminated workers`);
  });

  it('reads the limit files (quota, period, memory limit) again only once they are a minute old; the counters every time', () => {
    for (const [name, limits, counter] of [
      ['v1', ['cpu,cpuacct/cpu.cfs_quota_us', 'memory/memory.limit_in_bytes'], 'memory/memory.usage_in_bytes'],
      ['v2', ['cpu.max', 'memory.max'], 'memory.current'],
    ] as const) {
      const root = tempDir('sysprobe-cgroup-');
      fs.cpSync(fixture(name), root, { recursive: true });
      const file = (rel: string) => path.join(root, 'sys/fs/cgroup', rel);
      let now = 1_000;
      const reader = new CgroupReader({ root, now: () => now });
      const first = reader.readSync();
      assert.ok(first.cpu?.quotaCores !== undefined && first.memory?.limitBytes !== undefined, name);
      // The container is resized and its usage moves.
      fs.writeFileSync(file(limits[0]), name === 'v1' ? '300000\n' : '300000 100000\n');
      fs.writeFileSync(file(limits[1]), '134217728\n');
      fs.writeFileSync(file(counter), '123456789\n');
      now += 30_000;
      const soon = reader.readSync();
      assert.equal(soon.memory?.usageBytes, 123456789, `${name}: counters are read every time`);
      assert.equal(soon.cpu?.quotaCores, first.cpu?.quotaCores, `${name}: the quota is kept for a minute`);
      assert.equal(soon.memory?.limitBytes, first.memory?.limitBytes, `${name}: the limit is kept for a minute`);
      now += 30_000;
      const later = reader.readSync();
      assert.equal(later.cpu?.quotaCores, 3, `${name}: the new quota once a minute passed`);
      assert.equal(later.memory?.limitBytes, 134217728, `${name}: the new limit once a minute passed`);
      // limitsRereadMs: 0 reads them every time.
      fs.writeFileSync(file(limits[1]), '67108864\n');
      assert.equal(new CgroupReader({ root, limitsRereadMs: 0 }).readSync().memory?.limitBytes, 67108864, name);
    }
  });

  it('never throws where /proc/self is missing', () => {
    const reader = new CgroupReader({ root: tempDir('sysprobe-cgroup-') });
    assert.equal(reader.supported, false);
    assert.deepEqual(reader.location.problems, ['/proc/self/cgroup: absent', '/proc/self/mountinfo: absent']);
    assert.deepEqual({ ...reader.readSync(), time: 0 }, { time: 0 });
  });
});

describe('cgroup values', () => {
  const at = (time: number, periods: number, throttledPeriods: number, throttledMs: number) => ({
    time,
    cpu: { version: 2 as const, quotaCores: 0.2, periods, throttledPeriods, throttledMs },
    memory: { version: 2 as const, limitBytes: 1000, usageBytes: 900, oomKills: 0 },
  });

  it('turns two readings into the throttled ratio and ms per second, and usage into a share of the limit', () => {
    const values = cgroupValues(at(12_000, 150, 60, 2500), at(10_000, 100, 20, 1000));
    assert.deepEqual(values.cpu, {
      quotaCores: 0.2,
      periods: 150,
      throttledPeriods: 60,
      throttledMs: 2500,
      throttledRatio: 0.8,
      throttledMsPerSec: 750,
    });
    assert.deepEqual(values.memory, { limitBytes: 1000, usageBytes: 900, oomKills: 0, usageRatio: 0.9 });
  });

  it('leaves rates out for a first reading, an idle interval, or counters that went back', () => {
    assert.equal(cgroupValues(at(1, 10, 5, 5), undefined).cpu?.throttledRatio, undefined);
    assert.equal(cgroupValues(at(2, 10, 5, 5), at(1, 10, 5, 5)).cpu?.throttledRatio, undefined);
    assert.equal(cgroupValues(at(2, 3, 1, 1), at(1, 10, 5, 5)).cpu?.throttledMsPerSec, undefined);
  });

  it('measures throttling between a stall start and end, and CPU against the quota', () => {
    assert.equal(throttledBetween({ version: 1, throttledMs: 100 }, { version: 1, throttledMs: 340 }), 240);
    assert.equal(throttledBetween(undefined, { version: 1, throttledMs: 340 }), undefined);
    assert.equal(cpuShareOfAvailable(0.2, 0.2, 8), 1);
    assert.equal(cpuShareOfAvailable(1, undefined, 4), 0.25);
    assert.equal(cpuShareOfAvailable(1, 16, 4), 0.25);
  });
});
