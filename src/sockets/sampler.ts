/**
 * This process's TCP sockets and the namespace's TCP counters (Linux). Runs in the
 * probe worker, on its own interval: each sweep lists /proc/self/fd for `socket:[inode]`
 * links, joins them with the rows of /proc/net/tcp and tcp6 by inode, and reads
 * /proc/net/snmp and /proc/net/netstat for the counters, turned into rates between
 * sweeps. Where `ss` (iproute2) is installed, it adds TCP_INFO per socket (rtt, rto,
 * cwnd, retransmissions). Every read is async and bounded; a failed read leaves its
 * part out of the picture and says why.
 */
import { execFile, type ExecFileException } from 'node:child_process';
import * as fs from 'node:fs';
import { promises as fsp } from 'node:fs';
import * as os from 'node:os';
import { parseNetCounters, parseSs, parseTcpTable, type RowFilter, type SsInfo, type TcpRow } from './proc-net.js';
import { readBoundedFile } from '../internal/files.js';

/** The `sockets` option after checking. */
export interface SocketsSettings {
  /** How often a sweep runs, ms. */
  intervalMs: number;
  /** Enrich with `ss -tie` (TCP_INFO per socket) when ss is installed. */
  ss: boolean;
  /** The most remote endpoints listed in the picture (those with the most connections). */
  maxRemotes: number;
}

/**
 * Connections to one remote endpoint.
 */
export interface RemoteSockets {
  address: string;
  port: number;
  connections: number;
  /** By state name (ESTABLISHED, CLOSE_WAIT, ...). */
  states: Record<string, number>;
  sendQueueBytes: number;
  recvQueueBytes: number;
  /** From ss: segments retransmitted over these sockets' lives, summed. */
  retransmits?: number;
  /** From ss: the smoothed RTT, mean and max over these sockets, ms. */
  rttMsMean?: number;
  rttMsMax?: number;
}

/** One local port this process listens on. */
export interface ListenerSockets {
  port: number;
  /** The local addresses bound on this port (`0.0.0.0`, `::`, ...). */
  addresses: string[];
  /** Connections waiting for accept() (a listener's rx_queue), summed over its addresses. */
  acceptQueue: number;
  /** From ss: the accept queue's limit, the backlog given to listen() (capped by net.core.somaxconn), summed over its addresses. */
  acceptQueueMax?: number;
  /** This process's connections on this port, by state (TIME_WAIT included: see the docs). */
  states: Record<string, number>;
}

/** The network namespace's TCP counters (all processes in it), cumulative since boot, and per second over the last sweep. */
export interface TcpCounters {
  outSegs: number;
  inSegs: number;
  retransSegs: number;
  /** TcpExt.TCPTimeouts: retransmission timer expiries. */
  timeouts: number;
  /** TcpExt.ListenOverflows: a connection arrived while the accept queue was full. */
  listenOverflows: number;
  /** TcpExt.ListenDrops: SYNs dropped at a listener for any reason. */
  listenDrops: number;
  activeOpens: number;
  passiveOpens: number;
  attemptFails: number;
  estabResets: number;
  outRsts: number;
  /** Per second since the previous sweep; absent on the first. */
  rates?: {
    outSegsPerSec: number;
    retransSegsPerSec: number;
    timeoutsPerSec: number;
    listenOverflowsPerSec: number;
    listenDropsPerSec: number;
    /** Retransmitted over sent segments in the interval, 0..1 (0 when nothing was sent). */
    retransmitRatio: number;
  };
}

/** What `probe.sockets()` returns: the latest sweep. */
export interface SocketPicture {
  /** When the sweep started, ms since the epoch. */
  time: number;
  /** False off Linux or without /proc: the rest of the picture is empty, `unsupportedReason` says why. */
  supported: boolean;
  unsupportedReason?: string;
  /** This process's TCP sockets (listeners included). */
  total: number;
  /** By kernel state name: ESTABLISHED, SYN_SENT, CLOSE_WAIT, TIME_WAIT, LISTEN, ... */
  byState: Record<string, number>;
  /** Bytes sent but not yet acknowledged, over all non-listening sockets. */
  sendQueueBytes: number;
  /** Bytes received but not yet read by the app, over all non-listening sockets. */
  recvQueueBytes: number;
  /** The remote endpoints with the most connections (at most `maxRemotes`), most first. */
  byRemote: RemoteSockets[];
  /** How many remote endpoints there were in all (byRemote may list fewer). */
  remoteCount: number;
  /** By local listening port. */
  listeners: ListenerSockets[];
  /** Namespace-wide counters; absent when /proc/net/snmp could not be read. */
  tcp?: TcpCounters;
  /** `ok`: TCP_INFO was read; `off`: the option turned it off; `unavailable`: ss is not installed; `failed`: ss ran but failed (see the log). */
  ss: 'ok' | 'off' | 'unavailable' | 'failed';
  /** From ss: segments retransmitted over the lives of this process's sockets, summed. */
  retransmitsTotal?: number;
  /** Lines of /proc or ss output that did not parse (skipped). */
  malformedLines: number;
  /** True when the process had more descriptors than a sweep looks at (MAX_FDS). */
  truncated: boolean;
  /** How long the sweep took, ms. */
  sweepMs: number;
}

/** A sweep looks at most at this many descriptors: the reads stay bounded whatever `ulimit -n` allows. */
export const MAX_FDS = 200_000;
/**
 * /proc/net/tcp{,6} holds every socket of the network namespace, ~150 bytes a row: 64 MiB is
 * ~400,000 sockets. Read through internal/files.ts (bounded, a FIFO refused, and a descriptor
 * that a dying worker cannot leave open: internal/open-file.ts).
 */
const MAX_PROC_NET_BYTES = 64 << 20;
/**
 * Descriptors resolved per turn of the worker's loop. readlink runs synchronously, in the worker,
 * in slices with a yield between them: the async form costs four times the CPU (a threadpool
 * round trip per descriptor, bench:net) and would queue 10,000 requests on the libuv threadpool
 * the host shares for its own fs, dns and crypto work. A slice takes about 3 ms.
 */
const READLINK_SLICE = 256;
/** ss gets this long and this much output (about 1 KB a socket) before it is killed. */
const SS_TIMEOUT_MS = 3_000;
const SS_MAX_BYTES = 64 * 1024 * 1024;
const LITTLE_ENDIAN = os.endianness() === 'LE';

type Log = (level: 'info' | 'warn', msg: string, fields?: Record<string, unknown>) => void;

export class SocketSampler {
  readonly #settings: SocketsSettings;
  readonly #log: Log;
  readonly #procDir: string;
  #ssState: 'unknown' | 'ok' | 'unavailable' = 'unknown';
  readonly #ssFailuresLogged = new Set<string>();
  #previous: { at: number; tcp: TcpCounters } | undefined;
  #unsupportedLogged = false;

  /** `procDir` is for tests that point the sampler at a recorded /proc. */
  constructor(settings: SocketsSettings, log: Log, procDir = '/proc') {
    this.#settings = settings;
    this.#log = log;
    this.#procDir = procDir;
  }

  /** One sweep. Never throws: what cannot be read is left out, and said so. */
  async sweep(): Promise<SocketPicture> {
    const time = Date.now();
    const started = performance.now();
    const picture = emptyPicture(time, this.#settings.ss ? 'unavailable' : 'off');
    if (process.platform !== 'linux') return this.#unsupported(picture, `not Linux (${process.platform})`);
    let inodes: Set<number>;
    try {
      const found = await this.#ownSocketInodes();
      inodes = found.inodes;
      picture.truncated = found.truncated;
    } catch (err) {
      return this.#unsupported(picture, `cannot list ${this.#procDir}/self/fd: ${(err as Error).message}`);
    }
    const [tables, tcp] = await Promise.all([
      // Only our rows (and TIME_WAIT, which has no inode) are decoded: at 10,000 sockets on the host, most are not ours.
      Promise.all(
        ['tcp', 'tcp6'].map((name) =>
          this.#readTable(name, (inode, state) => inodes.has(inode) || (inode === 0 && state === 'TIME_WAIT')),
        ),
      ),
      this.#readCounters(time),
    ]);
    const rows = tables.flatMap((table) => table.rows);
    picture.malformedLines += tables.reduce((n, table) => n + table.malformed, 0);
    if (tables.every((t) => t.missing)) return this.#unsupported(picture, `cannot read ${this.#procDir}/net/tcp`);
    // After the tables: our rows tell ss which ports to list.
    const ss = this.#settings.ss ? await this.#readSs(inodes, rows) : undefined;
    if (ss) {
      picture.ss = ss.state;
      picture.malformedLines += ss.malformed;
    }
    if (tcp) {
      picture.tcp = tcp.counters;
      picture.malformedLines += tcp.malformed;
    }
    summarize(picture, rows, inodes, ss?.state === 'ok' ? ss.byInode : undefined, this.#settings.maxRemotes);
    picture.sweepMs = performance.now() - started;
    return picture;
  }

  #unsupported(picture: SocketPicture, reason: string): SocketPicture {
    picture.supported = false;
    picture.unsupportedReason = reason;
    picture.ss = this.#settings.ss ? 'unavailable' : 'off';
    if (!this.#unsupportedLogged) {
      this.#unsupportedLogged = true;
      this.#log('info', 'socket sampler unsupported here; the rest of sysprobe works', { sampler: 'sockets', reason });
    }
    return picture;
  }

  async #ownSocketInodes(): Promise<{ inodes: Set<number>; truncated: boolean }> {
    const dir = `${this.#procDir}/self/fd`;
    const fds = await fsp.readdir(dir);
    const truncated = fds.length > MAX_FDS;
    const names = truncated ? fds.slice(0, MAX_FDS) : fds;
    const inodes = new Set<number>();
    for (let i = 0; i < names.length; i++) {
      if (i > 0 && i % READLINK_SLICE === 0) await new Promise((resolve) => setImmediate(resolve));
      let link = '';
      try {
        link = fs.readlinkSync(`${dir}/${names[i]}`);
      } catch {
        // A descriptor closed since readdir is simply gone.
      }
      // "socket:[12345]": cheaper to check by hand than with a regex, 10,000 times.
      if (link.startsWith('socket:[')) inodes.add(Number(link.slice(8, -1)));
    }
    return { inodes, truncated };
  }

  #readNet(name: string): Promise<string> {
    return readBoundedFile(`${this.#procDir}/net/${name}`, MAX_PROC_NET_BYTES);
  }

  async #readTable(name: string, keep: RowFilter): Promise<{ rows: TcpRow[]; malformed: number; missing: boolean }> {
    try {
      // No IPv6 (or no IPv4) in this kernel: that table is simply absent.
      return {
        ...parseTcpTable(await this.#readNet(name), LITTLE_ENDIAN, keep),
        missing: false,
      };
    } catch {
      return { rows: [], malformed: 0, missing: true };
    }
  }

  async #readCounters(time: number): Promise<{ counters: TcpCounters; malformed: number } | undefined> {
    const read = (name: string) => this.#readNet(name).then(parseNetCounters, () => undefined);
    const [snmp, netstat] = await Promise.all([read('snmp'), read('netstat')]);
    const tcp = snmp?.groups.Tcp;
    if (!tcp) return undefined;
    const ext = netstat?.groups.TcpExt ?? {};
    const counters: TcpCounters = {
      outSegs: tcp.OutSegs ?? 0,
      inSegs: tcp.InSegs ?? 0,
      retransSegs: tcp.RetransSegs ?? 0,
      timeouts: ext.TCPTimeouts ?? 0,
      listenOverflows: ext.ListenOverflows ?? 0,
      listenDrops: ext.ListenDrops ?? 0,
      activeOpens: tcp.ActiveOpens ?? 0,
      passiveOpens: tcp.PassiveOpens ?? 0,
      attemptFails: tcp.AttemptFails ?? 0,
      estabResets: tcp.EstabResets ?? 0,
      outRsts: tcp.OutRsts ?? 0,
    };
    const before = this.#previous;
    if (before && time > before.at) {
      const seconds = (time - before.at) / 1000;
      const perSec = (key: keyof TcpCounters) =>
        Math.max(0, ((counters[key] as number) - (before.tcp[key] as number)) / seconds);
      const sent = counters.outSegs - before.tcp.outSegs;
      const retransmitted = counters.retransSegs - before.tcp.retransSegs;
      counters.rates = {
        outSegsPerSec: perSec('outSegs'),
        retransSegsPerSec: perSec('retransSegs'),
        timeoutsPerSec: perSec('timeouts'),
        listenOverflowsPerSec: perSec('listenOverflows'),
        listenDropsPerSec: perSec('listenDrops'),
        retransmitRatio: sent > 0 ? Math.max(0, Math.min(1, retransmitted / sent)) : 0,
      };
    }
    this.#previous = { at: time, tcp: counters };
    return { counters, malformed: (snmp?.malformed ?? 0) + (netstat?.malformed ?? 0) };
  }

  /** Runs `ss -tieanH` (all TCP sockets of the namespace, with TCP_INFO and inodes), bounded in time and size. */
  async #readSs(
    inodes: ReadonlySet<number>,
    rows: readonly TcpRow[],
  ): Promise<{ state: SocketPicture['ss']; byInode: Map<number, SsInfo>; malformed: number } | undefined> {
    if (this.#ssState === 'unavailable') return { state: 'unavailable', byInode: new Map(), malformed: 0 };
    const result = await new Promise<{ stdout: string; error?: ExecFileException }>((resolve) => {
      execFile(
        'ss',
        ['-tieanH', ...ssFilter(rows, inodes)],
        { timeout: SS_TIMEOUT_MS, maxBuffer: SS_MAX_BYTES, encoding: 'latin1', windowsHide: true },
        (error, stdout) => resolve({ stdout, error: error ?? undefined }),
      );
    });
    if (result.error?.code === 'ENOENT') {
      this.#ssState = 'unavailable';
      this.#log('info', 'ss unavailable: socket RTT and retransmissions are left out (install iproute2)', {
        sampler: 'sockets',
      });
      return { state: 'unavailable', byInode: new Map(), malformed: 0 };
    }
    if (result.error) {
      const message = result.error.killed
        ? `ss killed after ${SS_TIMEOUT_MS} ms or ${SS_MAX_BYTES} bytes`
        : result.error.message;
      if (!this.#ssFailuresLogged.has(message) && this.#ssFailuresLogged.size < 10) {
        this.#ssFailuresLogged.add(message);
        this.#log('warn', 'ss failed; this sweep has no TCP_INFO', { sampler: 'sockets', err: message });
      }
      return { state: 'failed', byInode: new Map(), malformed: 0 };
    }
    this.#ssState = 'ok';
    const parsed = parseSs(result.stdout, (inode) => inodes.has(inode));
    return { state: 'ok', byInode: new Map(parsed.rows.map((r) => [r.inode, r])), malformed: parsed.malformed };
  }
}

/** The most ports put in an ss filter; past it ss lists every socket and the parse skips the others. */
const SS_FILTER_MAX_PORTS = 64;

/**
 * An ss filter expression that lets the kernel (inet_diag bytecode) drop most sockets that are
 * not ours: our listening ports as the local port, and our connections' remote ports (few, even
 * with many connections) as the peer port. Other processes' sockets on those ports still come
 * through and are skipped by inode. Empty when there are too many ports to be worth it.
 */
export function ssFilter(rows: readonly TcpRow[], inodes: ReadonlySet<number>): string[] {
  const listening = new Set<number>();
  for (const row of rows) if (row.state === 'LISTEN' && inodes.has(row.inode)) listening.add(row.localPort);
  const remote = new Set<number>();
  for (const row of rows) {
    if (row.state === 'LISTEN' || !inodes.has(row.inode) || listening.has(row.localPort)) continue;
    remote.add(row.remotePort);
  }
  if (listening.size + remote.size === 0 || listening.size + remote.size > SS_FILTER_MAX_PORTS) return [];
  const terms = [
    ...[...listening].map((p) => ['sport', '=', `:${p}`]),
    ...[...remote].map((p) => ['dport', '=', `:${p}`]),
  ];
  return ['(', ...terms.flatMap((term, i) => (i === 0 ? term : ['or', ...term])), ')'];
}

function emptyPicture(time: number, ss: SocketPicture['ss']): SocketPicture {
  return {
    time,
    supported: true,
    total: 0,
    byState: {},
    sendQueueBytes: 0,
    recvQueueBytes: 0,
    byRemote: [],
    remoteCount: 0,
    listeners: [],
    ss,
    malformedLines: 0,
    truncated: false,
    sweepMs: 0,
  };
}

function bump(record: Record<string, number>, key: string, by = 1): void {
  record[key] = (record[key] ?? 0) + by;
}

/**
 * Joins the table rows with this process's inodes and fills the counts. TIME_WAIT sockets have
 * no descriptor (inode 0), so they are counted as ours when their local port is one we listen
 * on: the server side of connections this process closed first.
 */
export function summarize(
  picture: SocketPicture,
  rows: readonly TcpRow[],
  inodes: ReadonlySet<number>,
  ss: ReadonlyMap<number, SsInfo> | undefined,
  maxRemotes: number,
): void {
  // /proc/net/tcp is not a snapshot: the kernel resumes each 4 KB read by position, so a row can
  // come twice when sockets close meanwhile (or be missed when they open). Keep each inode once.
  const seen = new Set<number>();
  const own = rows.filter((r) => r.inode !== 0 && inodes.has(r.inode) && !seen.has(r.inode) && seen.add(r.inode));
  const listeners = new Map<number, ListenerSockets>();
  for (const row of own) {
    if (row.state !== 'LISTEN') continue;
    const listener: ListenerSockets = listeners.get(row.localPort) ?? {
      port: row.localPort,
      addresses: [],
      acceptQueue: 0,
      states: {},
    };
    listener.addresses.push(row.localAddress);
    // For a listener the kernel prints the accept queue's length as rx_queue; only inet_diag (ss) has its limit.
    listener.acceptQueue += row.rxQueue;
    const max = ss?.get(row.inode)?.listenBacklogMax;
    if (max !== undefined) listener.acceptQueueMax = (listener.acceptQueueMax ?? 0) + max;
    listeners.set(row.localPort, listener);
  }
  const timeWait = rows.filter((r) => r.inode === 0 && r.state === 'TIME_WAIT' && listeners.has(r.localPort));
  const remotes = new Map<string, RemoteSockets & { rttCount: number; rttSum: number }>();
  let retransmitsTotal: number | undefined;
  for (const row of [...own, ...timeWait]) {
    picture.total++;
    bump(picture.byState, row.state);
    if (row.state === 'LISTEN') continue;
    picture.sendQueueBytes += row.txQueue;
    picture.recvQueueBytes += row.rxQueue;
    const listener = listeners.get(row.localPort);
    if (listener) bump(listener.states, row.state);
    const key = `${row.remoteAddress}|${row.remotePort}`;
    let remote = remotes.get(key);
    if (!remote) {
      remote = {
        address: row.remoteAddress,
        port: row.remotePort,
        connections: 0,
        states: {},
        sendQueueBytes: 0,
        recvQueueBytes: 0,
        rttCount: 0,
        rttSum: 0,
      };
      remotes.set(key, remote);
    }
    remote.connections++;
    bump(remote.states, row.state);
    remote.sendQueueBytes += row.txQueue;
    remote.recvQueueBytes += row.rxQueue;
    const info = row.inode !== 0 ? ss?.get(row.inode) : undefined;
    if (info?.retransTotal !== undefined) {
      remote.retransmits = (remote.retransmits ?? 0) + info.retransTotal;
      retransmitsTotal = (retransmitsTotal ?? 0) + info.retransTotal;
    }
    if (info?.rttMs !== undefined) {
      remote.rttCount++;
      remote.rttSum += info.rttMs;
      remote.rttMsMax = Math.max(remote.rttMsMax ?? 0, info.rttMs);
    }
  }
  if (ss) picture.retransmitsTotal = retransmitsTotal ?? 0;
  picture.remoteCount = remotes.size;
  picture.byRemote = [...remotes.values()]
    .sort((a, b) => b.connections - a.connections || b.sendQueueBytes - a.sendQueueBytes)
    .slice(0, maxRemotes)
    .map(({ rttCount, rttSum, ...remote }) => (rttCount > 0 ? { ...remote, rttMsMean: rttSum / rttCount } : remote));
  picture.listeners = [...listeners.values()].sort((a, b) => a.port - b.port);
}
