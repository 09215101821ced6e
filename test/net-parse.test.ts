import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { decodeAddress, parseNetCounters, parseSs, parseTcpLine, parseTcpTable } from '../src/sockets/proc-net.js';
import { SocketSampler, ssFilter } from '../src/sockets/sampler.js';
import { resolveOptions } from '../src/probe/options.js';
import { tempDir } from './helpers.js';

const FIXTURES = path.resolve(__dirname, '../../test/fixtures/net');
const fixture = (name: string) => fs.readFileSync(path.join(FIXTURES, name), 'latin1');

describe('TCP table parsers on recorded /proc/net content', () => {
  it('decodes addresses: IPv4, IPv6, v4-mapped, each 32-bit word little-endian', () => {
    assert.equal(decodeAddress('0100007F'), '127.0.0.1');
    assert.equal(decodeAddress('0100007F', false), '1.0.0.127');
    assert.equal(decodeAddress('00000000000000000000000001000000'), '::1');
    assert.equal(decodeAddress('00000000000000000000000000000000'), '::');
    assert.equal(decodeAddress('0000000000000000FFFF00000100007F'), '::ffff:127.0.0.1');
    assert.equal(decodeAddress('B80D0120000000000000000001000000'), '2001:db8::1');
    assert.equal(decodeAddress('B80D0120010000000000000001000000'), '2001:db8:0:1::1');
    for (const bad of ['', '0100007', 'XX00007F', '0000000000000000000000000100000'])
      assert.equal(decodeAddress(bad), undefined, bad);
  });

  it('reads every field of the recorded IPv4 table, and skips and counts its malformed lines', () => {
    const { rows, malformed } = parseTcpTable(fixture('tcp'));
    assert.equal(malformed, 4, 'a truncated row, a non-hex state, an unknown state, and prose');
    assert.equal(rows.length, 6);
    assert.deepEqual(rows[0], {
      localAddress: '127.0.0.1',
      localPort: 0xced0,
      remoteAddress: '127.0.0.1',
      remotePort: 0x911d,
      state: 'ESTABLISHED',
      txQueue: 0,
      rxQueue: 0,
      retransmits: 0,
      inode: 594514,
    });
    assert.deepEqual(
      rows.map((r) => r.state),
      ['ESTABLISHED', 'LISTEN', 'CLOSE_WAIT', 'CLOSE_WAIT', 'TIME_WAIT', 'ESTABLISHED'],
    );
    assert.equal(rows[1]!.rxQueue, 3, "a listener's rx_queue is its accept queue");
    assert.deepEqual([rows[2]!.txQueue, rows[2]!.rxQueue], [0x1000, 0x200]);
    assert.equal(rows[4]!.inode, 0, 'TIME_WAIT has no inode');
    assert.deepEqual(
      [rows[5]!.remoteAddress, rows[5]!.remotePort, rows[5]!.txQueue, rows[5]!.retransmits],
      ['10.0.0.10', 443, 0xa000, 5],
    );
  });

  it('reads the recorded IPv6 table: ::, ::1, v4-mapped and a global address', () => {
    const { rows, malformed } = parseTcpTable(fixture('tcp6'));
    assert.equal(malformed, 1, 'the row with a short address');
    assert.deepEqual(
      rows.map((r) => `${r.state} ${r.localAddress}:${r.localPort} ${r.remoteAddress}:${r.remotePort}`),
      [
        'LISTEN :::37149 :::0',
        'ESTABLISHED ::1:37149 ::1:35326',
        'ESTABLISHED ::ffff:127.0.0.1:37149 ::ffff:127.0.0.1:52944',
        'ESTABLISHED ::1:35326 ::1:37149',
        'SYN_SENT 2001:db8::1:80 2001:db8::2:57344',
      ],
    );
  });

  it('names all eleven states from their hex codes', () => {
    const names = [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11].map(
      (code) =>
        parseTcpLine(
          `0: 0100007F:0050 00000000:0000 ${code.toString(16).toUpperCase().padStart(2, '0')} 00000000:00000000 00:00000000 00000000 0 0 1`,
        )?.state,
    );
    assert.deepEqual(names, [
      'ESTABLISHED',
      'SYN_SENT',
      'SYN_RECV',
      'FIN_WAIT1',
      'FIN_WAIT2',
      'TIME_WAIT',
      'CLOSE',
      'CLOSE_WAIT',
      'LAST_ACK',
      'LISTEN',
      'CLOSING',
    ]);
  });

  it('reads /proc/net/snmp and netstat counters, skipping malformed groups', () => {
    const snmp = parseNetCounters(fixture('snmp'));
    assert.equal(snmp.malformed, 3, 'lengths differ, a non-number, a header without values');
    assert.equal(snmp.groups.Tcp?.RtoMin, 200);
    assert.equal(typeof snmp.groups.Tcp?.RetransSegs, 'number');
    assert.equal(snmp.groups.Tcp?.MaxConn, -1);
    assert.ok(snmp.groups.Ip && snmp.groups.Udp);
    assert.equal(snmp.groups.Foo, undefined);
    const netstat = parseNetCounters(fixture('netstat'));
    assert.equal(netstat.malformed, 0);
    for (const name of ['TCPTimeouts', 'ListenOverflows', 'ListenDrops'])
      assert.equal(typeof netstat.groups.TcpExt?.[name], 'number', name);
  });

  it('reads ss -tie output: rtt, rto, cwnd, retrans a/b, bytes_retrans, last*, listen backlog; counts lines without a socket', () => {
    const { rows, malformed } = parseSs(fixture('ss.txt'));
    assert.equal(malformed, 2, 'a details line before any socket, a summary without ino:');
    assert.equal(rows.length, 6);
    assert.deepEqual(
      rows.find((r) => r.inode === 594514),
      {
        inode: 594514,
        rtoMs: 204,
        rttMs: 0.015,
        rttVarMs: 0.007,
        cwnd: 10,
        lastSendMs: 324,
        lastRecvMs: 324,
        lastAckMs: 324,
      },
    );
    assert.equal(rows.find((r) => r.inode === 594512)?.listenBacklogMax, 511);
    assert.deepEqual(
      rows.find((r) => r.inode === 700004),
      {
        inode: 700004,
        rtoMs: 3200,
        rttMs: 12.5,
        rttVarMs: 3.25,
        cwnd: 1,
        bytesRetrans: 7240,
        retransCurrent: 1,
        retransTotal: 9,
        lastSendMs: 100,
        lastRecvMs: 5000,
        lastAckMs: 4000,
      },
    );
  });
});

describe('socket sampler on a recorded /proc tree', () => {
  let dir: string;
  before(() => {
    // /proc/self/fd as the sampler sees it: links to sockets (ours), a file, a pipe.
    dir = tempDir('sysprobe-net-');
    fs.mkdirSync(path.join(dir, 'self/fd'), { recursive: true });
    fs.mkdirSync(path.join(dir, 'net'));
    for (const name of ['tcp', 'tcp6', 'snmp', 'netstat'])
      fs.copyFileSync(path.join(FIXTURES, name), path.join(dir, 'net', name));
    const links: Record<string, string> = {
      0: '/dev/null',
      1: 'pipe:[42]',
      10: 'socket:[594512]',
      11: 'socket:[594515]',
      12: 'socket:[594516]',
      13: 'socket:[700001]',
      14: 'socket:[700002]',
      15: 'socket:[700003]',
      16: 'socket:[700004]',
      17: 'socket:[999999]',
    };
    for (const [fd, target] of Object.entries(links)) fs.symlinkSync(target, path.join(dir, 'self/fd', fd));
  });
  after(() => fs.rmSync(dir, { recursive: true, force: true }));

  it('joins descriptors with table rows by inode: states, queues, remotes, listeners, TIME_WAIT on our ports', async function () {
    if (process.platform !== 'linux') this.skip();
    const sampler = new SocketSampler({ intervalMs: 1000, ss: false, maxRemotes: 2 }, () => {}, dir);
    const p = await sampler.sweep();
    assert.equal(p.supported, true);
    assert.equal(p.ss, 'off');
    // tcp6's malformed row belongs to another process: rows not ours are checked only as far as state and inode.
    assert.equal(p.malformedLines, 4 + 0 + 3);
    assert.deepEqual(p.byState, { LISTEN: 2, ESTABLISHED: 3, CLOSE_WAIT: 2, TIME_WAIT: 1 });
    assert.equal(p.total, 8);
    assert.equal(p.sendQueueBytes, 0x1000 + 0xa000);
    assert.equal(p.recvQueueBytes, 0x200);
    assert.equal(p.remoteCount, 6);
    // One connection each, so the fuller send queues come first; maxRemotes keeps two.
    assert.deepEqual(
      p.byRemote.map((r) => [r.address, r.port, r.connections, r.sendQueueBytes]),
      [
        ['10.0.0.10', 443, 1, 0xa000],
        ['10.0.0.10', 0xc350, 1, 0x1000],
      ],
    );
    assert.deepEqual(
      p.listeners.map((l) => [l.port, l.addresses, l.acceptQueue, l.states]),
      [
        [0x1f90, ['127.0.0.1'], 3, { CLOSE_WAIT: 2, TIME_WAIT: 1 }],
        [37149, ['::'], 0, { ESTABLISHED: 2 }],
      ],
    );
    assert.equal(p.tcp?.rates, undefined, 'no rates on the first sweep');
    assert.equal(p.tcp?.listenOverflows, parseNetCounters(fixture('netstat')).groups.TcpExt?.ListenOverflows);
    const second = await sampler.sweep();
    assert.deepEqual(second.tcp?.rates, {
      outSegsPerSec: 0,
      retransSegsPerSec: 0,
      timeoutsPerSec: 0,
      listenOverflowsPerSec: 0,
      listenDropsPerSec: 0,
      retransmitRatio: 0,
    });
  });

  it('without /proc it reports unsupported, says why once in the log, and does not throw', async () => {
    const logs: string[] = [];
    const sampler = new SocketSampler(
      { intervalMs: 1000, ss: true, maxRemotes: 20 },
      (_level, msg) => logs.push(msg),
      path.join(dir, 'missing'),
    );
    const [a, b] = [await sampler.sweep(), await sampler.sweep()];
    assert.equal(a.supported, false);
    assert.match(a.unsupportedReason ?? '', process.platform === 'linux' ? /cannot list/ : /not Linux/);
    assert.equal(b.supported, false);
    assert.deepEqual([a.total, a.byRemote, a.ss], [0, [], 'unavailable']);
    assert.equal(logs.filter((m) => m.includes('unsupported')).length, 1);
  });

  it("asks ss only for our listening ports and our connections' remote ports, or for everything past 64 ports", () => {
    const rows = parseTcpTable(fixture('tcp')).rows.concat(parseTcpTable(fixture('tcp6')).rows);
    const ours = new Set([594512, 594515, 594516, 700001, 700002, 700003, 700004]);
    // Listeners 8080 and 37149; the one connection not on a listener goes to port 443.
    assert.deepEqual(ssFilter(rows, ours), [
      '(',
      'sport',
      '=',
      ':8080',
      'or',
      'sport',
      '=',
      ':37149',
      'or',
      'dport',
      '=',
      ':443',
      ')',
    ]);
    assert.deepEqual(ssFilter(rows, new Set()), []);
    const many = Array.from({ length: 65 }, (_, i) => ({ ...rows[5]!, inode: 1000 + i, remotePort: 1000 + i }));
    assert.deepEqual(ssFilter(many, new Set(many.map((r) => r.inode))), []);
  });

  it('checks the sockets option at start() with coded errors', () => {
    assert.equal(resolveOptions({}).sockets, undefined, 'off by default');
    assert.deepEqual(resolveOptions({ sockets: true }).sockets, { intervalMs: 10_000, ss: true, maxRemotes: 20 });
    assert.deepEqual(resolveOptions({ sockets: { intervalMs: 500, ss: false, maxRemotes: 5 } }).sockets, {
      intervalMs: 500,
      ss: false,
      maxRemotes: 5,
    });
    for (const bad of ['yes', null, [], { intervalMs: 10 }, { ss: 'no' }, { maxRemotes: 0 }, { other: 1 }]) {
      assert.throws(
        () => resolveOptions({ sockets: bad }),
        { code: 'SYSPROBE_ERR_INVALID_OPTION' },
        JSON.stringify(bad),
      );
    }
  });
});
