// A health-check client in its own thread, so a blocked main thread can neither delay it nor stretch what it
// measures: it warms up (connection, parser, JIT), waits for the main thread's go, then asks GET /health (HEAD at odd
// offsets) at the given offsets and reports each answer with its latency, measured in the client thread.
import { Worker } from 'node:worker_threads';

const CLIENT = `
const { parentPort, workerData } = require('node:worker_threads');
const http = require('node:http');
const agent = new http.Agent({ keepAlive: true });
const get = (method) => new Promise((resolve, reject) => {
  const t0 = performance.now();
  const req = http.request({ host: '127.0.0.1', port: workerData.port, path: '/health', method, agent }, (res) => {
    let body = '';
    res.on('data', (c) => { body += c; });
    res.on('end', () => resolve({ status: res.statusCode, ms: performance.now() - t0, body, retryAfter: res.headers['retry-after'], cacheControl: res.headers['cache-control'] }));
  });
  req.on('error', reject);
  req.end();
});
(async () => {
  await get('GET');
  parentPort.postMessage('warm');
  const flag = new Int32Array(workerData.flag);
  Atomics.wait(flag, 0, 0);
  const t0 = performance.now();
  const answers = [];
  for (const at of workerData.offsets) {
    const wait = at - (performance.now() - t0);
    if (wait > 0) await new Promise((r) => setTimeout(r, wait));
    answers.push({ at, ...(await get(at % 2 ? 'HEAD' : 'GET')) });
  }
  parentPort.postMessage(answers);
  agent.destroy();
})().catch((err) => parentPort.postMessage({ error: String(err) }));
`;

export interface Answer {
  /** When it was asked, ms after the go. */
  at: number;
  status: number;
  /** How long the answer took, measured by the client. */
  ms: number;
  body: string;
  retryAfter?: string;
  cacheControl?: string;
}

/**
 * Starts the client and resolves once it is warm. The clock starts when this returns (the go is given then):
 * block the main thread right after. answers() then waits for every answer and ends the client.
 */
export async function healthClient(port: number, offsets: number[]): Promise<{ answers(): Promise<Answer[]> }> {
  const flag = new SharedArrayBuffer(4);
  const client = new Worker(CLIENT, { eval: true, workerData: { port, flag, offsets } });
  const messages: unknown[] = [];
  let arrived: (() => void) | undefined;
  client.on('message', (m: unknown) => {
    messages.push(m);
    arrived?.();
  });
  const failed = new Promise<never>((_, reject) => client.once('error', reject));
  const next = async (): Promise<unknown> => {
    while (messages.length === 0) await Promise.race([new Promise<void>((r) => (arrived = r)), failed]);
    return messages.shift();
  };
  const warm = await next();
  if (warm !== 'warm') throw new Error(`health client: ${JSON.stringify(warm)}`);
  Atomics.store(new Int32Array(flag), 0, 1);
  Atomics.notify(new Int32Array(flag), 0);
  return {
    async answers() {
      const result = await next();
      await client.terminate();
      if (!Array.isArray(result)) throw new Error(`health client: ${JSON.stringify(result)}`);
      return result as Answer[];
    },
  };
}
