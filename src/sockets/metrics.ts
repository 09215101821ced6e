/**
 * The socket sampler's instruments (option `sockets`): connection counts by state under the
 * semantic conventions' name, and `sysprobe.tcp.*` for queues and the namespace's TCP
 * counters. Read from the samples at collection time, like the rest of the exporter.
 */
import type { BatchObservableResult, Meter, Observable } from '@opentelemetry/api';
import type { Sample } from '../samples/sample.js';

/** Kernel state names → the values of the semantic conventions' `network.connection.state`. */
export const CONNECTION_STATES: Readonly<Record<string, string>> = {
  ESTABLISHED: 'established',
  SYN_SENT: 'syn_sent',
  SYN_RECV: 'syn_received',
  NEW_SYN_RECV: 'syn_received',
  FIN_WAIT1: 'fin_wait_1',
  FIN_WAIT2: 'fin_wait_2',
  TIME_WAIT: 'time_wait',
  CLOSE: 'close',
  CLOSE_WAIT: 'close_wait',
  LAST_ACK: 'last_ack',
  LISTEN: 'listen',
  CLOSING: 'closing',
};

type Observe = (result: BatchObservableResult, recent: Sample[], latest: Sample | undefined) => void;

/** Creates the instruments (through `track`, so they join the exporter's batch callback) and returns their observer. */
export function socketMetrics(meter: Meter, track: <T extends Observable>(instrument: T) => T): Observe {
  const upDown = (name: string, unit: string, description: string) =>
    track(meter.createObservableUpDownCounter(name, { unit, description }));
  const counter = (name: string, unit: string, description: string) =>
    track(meter.createObservableCounter(name, { unit, description }));
  const gauge = (name: string, unit: string, description: string) =>
    track(meter.createObservableGauge(name, { unit, description }));
  const connections = upDown(
    'system.network.connection.count',
    '{connection}',
    "This process's TCP connections, by network.connection.state (TIME_WAIT: on its listening ports).",
  );
  const sendQueue = upDown(
    'sysprobe.tcp.send_queue.size',
    'By',
    "Bytes this process's sockets sent that the peers have not acknowledged yet.",
  );
  const receiveQueue = upDown(
    'sysprobe.tcp.receive_queue.size',
    'By',
    "Bytes this process's sockets received that it has not read yet.",
  );
  const acceptQueue = upDown(
    'sysprobe.tcp.accept_queue.size',
    '{connection}',
    "Connections waiting for accept() on this process's listeners.",
  );
  const retransmitRate = gauge(
    'sysprobe.tcp.retransmit.rate',
    '{segment}/s',
    'Retransmitted TCP segments per second over the last sweep, the whole network namespace.',
  );
  const retransmitted = counter(
    'sysprobe.tcp.retransmitted_segments',
    '{segment}',
    'Retransmitted TCP segments, the whole network namespace (/proc/net/snmp RetransSegs).',
  );
  const timeouts = counter(
    'sysprobe.tcp.timeouts',
    '{timeout}',
    'TCP retransmission timer expiries, the whole network namespace (TcpExt TCPTimeouts).',
  );
  const overflows = counter(
    'sysprobe.tcp.listen.overflows',
    '{connection}',
    'Connections that found an accept queue full, the whole network namespace (TcpExt ListenOverflows).',
  );
  const drops = counter(
    'sysprobe.tcp.listen.drops',
    '{connection}',
    'SYNs dropped at a listener, the whole network namespace (TcpExt ListenDrops).',
  );
  const socketRetransmits = upDown(
    'sysprobe.tcp.socket.retransmits',
    '{segment}',
    "Segments retransmitted over the lives of this process's open sockets, summed (from ss; falls when sockets close).",
  );
  const states = [...new Set(Object.values(CONNECTION_STATES))];
  let last: Sample['sockets'];
  return (result, recent) => {
    // Sweeps run on their own interval: the newest sample that carries one.
    last = recent.findLast((s) => s.sockets)?.sockets ?? last;
    if (!last) return;
    const byState: Record<string, number> = Object.fromEntries(states.map((s) => [s, 0]));
    for (const [state, n] of Object.entries(last.byState)) {
      const name = CONNECTION_STATES[state];
      if (name) byState[name]! += n;
    }
    // Every state each time, so a state that empties reads 0 rather than its last count.
    for (const [state, n] of Object.entries(byState))
      result.observe(connections, n, { 'network.connection.state': state, 'network.transport': 'tcp' });
    result.observe(sendQueue, last.sendQueueBytes);
    result.observe(receiveQueue, last.recvQueueBytes);
    if (last.acceptQueue !== undefined) result.observe(acceptQueue, last.acceptQueue);
    if (last.retransmitsPerSec !== undefined) result.observe(retransmitRate, last.retransmitsPerSec);
    if (last.tcp) {
      result.observe(retransmitted, last.tcp.retransSegs);
      result.observe(timeouts, last.tcp.timeouts);
      result.observe(overflows, last.tcp.listenOverflows);
      result.observe(drops, last.tcp.listenDrops);
    }
    if (last.socketRetransmits !== undefined) result.observe(socketRetransmits, last.socketRetransmits);
  };
}
