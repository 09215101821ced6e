/**
 * Parsers for the kernel's TCP tables and counters (/proc/net/tcp, tcp6, snmp,
 * netstat) and for `ss -tie` output. Pure functions over text, tested on
 * recorded content: a line that cannot be parsed is skipped and counted, never thrown.
 */

/** The kernel's TCP states, by the hex code /proc/net/tcp prints (include/net/tcp_states.h). */
export const TCP_STATES: Readonly<Record<number, string>> = {
  0x01: 'ESTABLISHED',
  0x02: 'SYN_SENT',
  0x03: 'SYN_RECV',
  0x04: 'FIN_WAIT1',
  0x05: 'FIN_WAIT2',
  0x06: 'TIME_WAIT',
  0x07: 'CLOSE',
  0x08: 'CLOSE_WAIT',
  0x09: 'LAST_ACK',
  0x0a: 'LISTEN',
  0x0b: 'CLOSING',
  0x0c: 'NEW_SYN_RECV',
};

/** One row of /proc/net/tcp or tcp6. */
export interface TcpRow {
  localAddress: string;
  localPort: number;
  remoteAddress: string;
  remotePort: number;
  /** One of the names in {@link TCP_STATES}. */
  state: string;
  /** Bytes in the send queue (not yet acknowledged by the peer). */
  txQueue: number;
  /** Bytes in the receive queue (not yet read by the app); for a listener, the accept queue length. */
  rxQueue: number;
  /** Times the kernel retransmitted the head segment since the last ACK (the `retrnsmt` column). */
  retransmits: number;
  /** The socket's inode (0 for sockets no file refers to, such as TIME_WAIT). */
  inode: number;
}

export interface Parsed<T> {
  rows: T[];
  /** Lines that did not parse (skipped). */
  malformed: number;
}

const HEX_WORD = /^[0-9A-Fa-f]{8}$/;

/**
 * Decodes the kernel's address column: each 32-bit word is printed as hex in host byte order,
 * so on little-endian hosts every group of 4 bytes is reversed. 8 digits for IPv4, 32 for IPv6.
 */
export function decodeAddress(hex: string, littleEndian = true): string | undefined {
  if (hex.length !== 8 && hex.length !== 32) return undefined;
  const bytes: number[] = [];
  for (let w = 0; w < hex.length; w += 8) {
    const word = hex.slice(w, w + 8);
    if (!HEX_WORD.test(word)) return undefined;
    const wordBytes = [0, 2, 4, 6].map((i) => parseInt(word.slice(i, i + 2), 16));
    bytes.push(...(littleEndian ? wordBytes.reverse() : wordBytes));
  }
  if (bytes.length === 4) return bytes.join('.');
  // IPv4-mapped IPv6 (::ffff:a.b.c.d), as Node's net module prints it.
  if (bytes.slice(0, 10).every((b) => b === 0) && bytes[10] === 0xff && bytes[11] === 0xff)
    return `::ffff:${bytes.slice(12).join('.')}`;
  return formatIpv6(bytes);
}

/** RFC 5952 text: lower-case groups, leading zeros dropped, the longest run of two or more zero groups as `::`. */
function formatIpv6(bytes: number[]): string {
  const groups: number[] = [];
  for (let i = 0; i < 16; i += 2) groups.push((bytes[i]! << 8) | bytes[i + 1]!);
  let bestStart = -1;
  let bestLength = 1;
  for (let i = 0; i < 8;) {
    if (groups[i] !== 0) {
      i++;
      continue;
    }
    let j = i;
    while (j < 8 && groups[j] === 0) j++;
    if (j - i > bestLength) {
      bestStart = i;
      bestLength = j - i;
    }
    i = j;
  }
  const text = (from: number, to: number) =>
    groups
      .slice(from, to)
      .map((g) => g.toString(16))
      .join(':');
  if (bestStart < 0) return text(0, 8);
  return `${text(0, bestStart)}::${text(bestStart + bestLength, 8)}`;
}

function parseEndpoint(field: string, littleEndian: boolean): { address: string; port: number } | undefined {
  const colon = field.indexOf(':');
  if (colon < 0) return undefined;
  const address = decodeAddress(field.slice(0, colon), littleEndian);
  const portHex = field.slice(colon + 1);
  const port = parseInt(portHex, 16);
  if (address === undefined || !/^[0-9A-Fa-f]{1,4}$/.test(portHex)) return undefined;
  return { address, port };
}

function hexInt(text: string | undefined): number {
  return text !== undefined && /^[0-9A-Fa-f]{1,16}$/.test(text) ? parseInt(text, 16) : NaN;
}

/** Decides, from the cheap fields, whether a row is worth decoding (its addresses cost the most). */
export type RowFilter = (inode: number, state: string) => boolean;

/** Parses one data line of /proc/net/tcp or tcp6: a row, `undefined` when malformed, `null` when `keep` passed it over. */
export function parseTcpLine(line: string, littleEndian = true, keep?: RowFilter): TcpRow | undefined | null {
  // sl local rem st tx:rx tr:when retrnsmt uid timeout inode ...
  const f = line.trim().split(/\s+/);
  if (f.length < 10 || !f[0]!.endsWith(':')) return undefined;
  const state = TCP_STATES[hexInt(f[3])];
  const inode = /^\d+$/.test(f[9]!) ? Number(f[9]) : NaN;
  if (state === undefined || Number.isNaN(inode)) return undefined;
  if (keep && !keep(inode, state)) return null;
  const local = parseEndpoint(f[1]!, littleEndian);
  const remote = parseEndpoint(f[2]!, littleEndian);
  const [tx, rx] = f[4]!.split(':');
  const txQueue = hexInt(tx);
  const rxQueue = hexInt(rx);
  const retransmits = hexInt(f[6]);
  if (!local || !remote || Number.isNaN(txQueue) || Number.isNaN(rxQueue) || Number.isNaN(retransmits))
    return undefined;
  return {
    localAddress: local.address,
    localPort: local.port,
    remoteAddress: remote.address,
    remotePort: remote.port,
    state,
    txQueue,
    rxQueue,
    retransmits,
    inode,
  };
}

/**
 * Parses a whole /proc/net/tcp or tcp6 file (the header line is skipped, not counted). With
 * `keep`, rows it passes over are checked only as far as their state and inode.
 */
export function parseTcpTable(text: string, littleEndian = true, keep?: RowFilter): Parsed<TcpRow> {
  const rows: TcpRow[] = [];
  let malformed = 0;
  const lines = text.split('\n');
  for (let i = 0; i < lines.length; i++) {
    const line = lines[i]!;
    if (line.trim() === '' || (i === 0 && line.includes('local_address'))) continue;
    const row = parseTcpLine(line, littleEndian, keep);
    if (row) rows.push(row);
    else if (row === undefined) malformed++;
  }
  return { rows, malformed };
}

/**
 * Parses /proc/net/snmp or /proc/net/netstat: pairs of lines with the same prefix, names then
 * values (`Tcp: RtoAlgorithm ... RetransSegs ...` / `Tcp: 1 ... 5167 ...`).
 * Returns counters by group (`Tcp`, `TcpExt`, ...). A pair whose lengths differ, or a value
 * that is not a number, is skipped and counted.
 */
export function parseNetCounters(text: string): Parsed<never> & { groups: Record<string, Record<string, number>> } {
  const groups: Record<string, Record<string, number>> = {};
  let malformed = 0;
  const lines = text.split('\n').filter((l) => l.trim() !== '');
  for (let i = 0; i < lines.length; i++) {
    const names = lines[i]!.trim().split(/\s+/);
    const values = lines[i + 1]?.trim().split(/\s+/);
    const group = names[0];
    if (!group?.endsWith(':') || values?.[0] !== group) {
      malformed++;
      continue;
    }
    i++; // the values line is consumed with its names line
    if (names.length !== values.length) {
      malformed++;
      continue;
    }
    const counters: Record<string, number> = {};
    let bad = false;
    for (let k = 1; k < names.length; k++) {
      const value = Number(values[k]);
      if (!/^-?\d+$/.test(values[k]!) || !Number.isFinite(value)) {
        bad = true;
        break;
      }
      counters[names[k]!] = value;
    }
    if (bad) {
      malformed++;
      continue;
    }
    groups[group.slice(0, -1)] = counters;
  }
  return { rows: [], malformed, groups };
}

/** What `ss -ti` adds for one socket (TCP_INFO). Times in ms. */
export interface SsInfo {
  inode: number;
  /** For a listener: the accept queue's limit (ss prints it as Send-Q). */
  listenBacklogMax?: number;
  rttMs?: number;
  rttVarMs?: number;
  rtoMs?: number;
  cwnd?: number;
  /** Retransmissions of the current head segment (the `a` of `retrans:a/b`). */
  retransCurrent?: number;
  /** Segments retransmitted over the socket's life (the `b` of `retrans:a/b`). */
  retransTotal?: number;
  bytesRetrans?: number;
  lastSendMs?: number;
  lastRecvMs?: number;
  lastAckMs?: number;
}

const SS_NUMBERS: ReadonlyArray<[string, keyof SsInfo]> = [
  ['rto', 'rtoMs'],
  ['cwnd', 'cwnd'],
  ['bytes_retrans', 'bytesRetrans'],
  ['lastsnd', 'lastSendMs'],
  ['lastrcv', 'lastRecvMs'],
  ['lastack', 'lastAckMs'],
];

/** Reads the TCP_INFO line of one socket (`rto:204 rtt:1.7/0.2 cwnd:10 retrans:0/3 ...`). */
function parseSsDetails(text: string, info: SsInfo): void {
  for (const token of text.split(/\s+/)) {
    const colon = token.indexOf(':');
    if (colon <= 0) continue;
    const key = token.slice(0, colon);
    const value = token.slice(colon + 1);
    if (key === 'rtt') {
      const [rtt, rttVar] = value.split('/').map(Number);
      if (Number.isFinite(rtt)) info.rttMs = rtt;
      if (Number.isFinite(rttVar)) info.rttVarMs = rttVar;
    } else if (key === 'retrans') {
      const [current, total] = value.split('/').map(Number);
      if (Number.isFinite(current)) info.retransCurrent = current;
      if (Number.isFinite(total)) info.retransTotal = total;
    } else {
      const field = SS_NUMBERS.find(([name]) => name === key)?.[1];
      const n = Number(value);
      if (field && value !== '' && Number.isFinite(n)) (info as unknown as Record<string, number>)[field] = n;
    }
  }
}

/**
 * Parses `ss -tieH` (or `-tinH` with `-e`) output: a summary line per socket carrying `ino:N`,
 * then an indented line with TCP_INFO. A summary line without `ino:` is counted as malformed,
 * and so is a details line with no socket before it. With `keep`, only those sockets are read.
 */
export function parseSs(text: string, keep?: (inode: number) => boolean): Parsed<SsInfo> {
  const rows: SsInfo[] = [];
  let malformed = 0;
  let current: SsInfo | undefined;
  let skipping = false;
  for (const line of text.split('\n')) {
    if (line.trim() === '') continue;
    if (/^\s/.test(line)) {
      if (current) parseSsDetails(line.trim(), current);
      else if (!skipping) malformed++;
      continue;
    }
    const ino = /\bino:(\d+)/.exec(line);
    current = undefined;
    skipping = false;
    if (!ino) {
      malformed++;
      continue;
    }
    const inode = Number(ino[1]);
    // Another process's socket: its details line is passed over unread.
    if (keep && !keep(inode)) {
      skipping = true;
      continue;
    }
    current = { inode };
    // State Recv-Q Send-Q Local Peer ...: a listener's Send-Q is its backlog limit.
    const [state, , sendQ] = line.split(/\s+/);
    if (state === 'LISTEN' && /^\d+$/.test(sendQ ?? '')) current.listenBacklogMax = Number(sendQ);
    rows.push(current);
    // Some ss versions print TCP_INFO on the same line.
    parseSsDetails(line.slice(ino.index), current);
  }
  return { rows, malformed };
}
