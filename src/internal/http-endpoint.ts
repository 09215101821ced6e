/**
 * The probe worker's small HTTP servers (health, control) share these limits: they
 * run next to the host, so every request is bounded in size and time, nothing keeps
 * the process alive, and a misbehaving client costs little.
 */
import * as http from 'node:http';
import type { AddressInfo, Socket } from 'node:net';

/**
 * Raw bytes a request's head may take (request line, headers, line ends, and whitespace, leading
 * empty lines included: Node's own count skips whitespace); more is answered 431.
 */
export const MAX_HEADER_BYTES = 8 * 1024;
/** Request-target length; more is answered 414. */
export const MAX_URL_BYTES = 2 * 1024;
/** Body bytes a request may carry; more is answered 413. */
export const MAX_BODY_BYTES = 4 * 1024;
/**
 * Connections one server holds at once, so a flood costs at most this many descriptors. A new one
 * over the limit closes the oldest idle one (no request in flight: a silent or half-sent client),
 * so a flood cannot lock an operator out; only when all are busy is the new one closed.
 */
export const MAX_CONNECTIONS = 64;
/** A request's headers must arrive within this. */
export const HEADERS_TIMEOUT_MS = 5_000;
/** A whole request (headers and body) must arrive within this. */
export const REQUEST_TIMEOUT_MS = 10_000;
/** How often Node checks the two timeouts above (its default, 30 s, would let a slow client sit six times longer). */
const TIMEOUT_CHECK_MS = 1_000;
/** An idle keep-alive connection is closed after this. */
const KEEP_ALIVE_MS = 5_000;
/** A connection with no traffic either way for this long is destroyed: a client that stopped reading a response, say. */
const SOCKET_IDLE_MS = 15_000;
/** The parser's refusal is written, then the socket destroyed this long after at the latest, read or not. */
const REFUSAL_LINGER_MS = 1_000;

export interface Reply {
  status: number;
  headers?: Record<string, string>;
  /** A JSON value, or a stream writer for downloads. */
  json?: unknown;
  stream?: (res: http.ServerResponse) => void;
}

export type Route = (req: http.IncomingMessage, url: URL, body: Buffer) => Promise<Reply> | Reply;

export interface EndpointAddress {
  address: string;
  port: number;
}

/** A request refused before its route ran (size limits, malformed): for a warn log. */
export type OnRefused = (
  status: number,
  why: string,
  request: { method: string; path: string; remote: string },
) => void;

/** What the server knows of one connection: requests in flight, and the meter of the head being received. */
interface Connection {
  active: number;
  /** The request whose head the meter saw end last; its body may still be arriving. */
  current: http.IncomingMessage | undefined;
  /** Counting a head: from a request's first byte (a leading empty line too) to its blank line. */
  inHead: boolean;
  headBytes: number;
  /** A byte other than CR or LF was seen in this head (empty lines before a request line are allowed). */
  started: boolean;
  /** How much of CR LF CR LF has just been seen. */
  run: number;
  refused: boolean;
}

const HEAD_END = [13, 10, 13, 10];

/**
 * Counts a head's raw bytes as they arrive, before the parser sees them. Returns false when this
 * chunk takes the head over MAX_HEADER_BYTES. After a head, bytes are not counted until its request
 * is complete (its body read by the parser); pipelined requests read together with the end of the
 * previous one are left to Node's own count.
 */
function meterHead(c: Connection, chunk: Buffer): boolean {
  if (!c.inHead) {
    if (c.current && !c.current.complete) return true;
    Object.assign(c, { inHead: true, headBytes: 0, started: false, run: 0, current: undefined });
  }
  for (let i = 0; i < chunk.length; i++) {
    const b = chunk[i]!;
    if (++c.headBytes > MAX_HEADER_BYTES) return false;
    if (!c.started) {
      if (b === 13 || b === 10) continue;
      c.started = true;
    }
    c.run = b === HEAD_END[c.run] ? c.run + 1 : b === 13 ? 1 : 0;
    if (c.run === 4) {
      c.inHead = false;
      return true;
    }
  }
  return true;
}

/** Writes a bare answer and closes: end() alone waits for a client that may never read, so destroy after a bounded wait. */
function refuseSocket(socket: Socket, status: string): void {
  if (!socket.writable) {
    socket.destroy();
    return;
  }
  const linger = setTimeout(() => socket.destroy(), REFUSAL_LINGER_MS).unref();
  socket.once('close', () => clearTimeout(linger));
  socket.end(`HTTP/1.1 ${status}\r\nConnection: close\r\nContent-Length: 0\r\n\r\n`, () => socket.destroy());
}

/**
 * Listens on host:port and answers with `route`; resolves once listening. The server is
 * unref()ed and bounded: at most MAX_CONNECTIONS connections (the oldest idle one closed for a
 * new one), heads of at most MAX_HEADER_BYTES raw bytes, headers within
 * HEADERS_TIMEOUT_MS (checked every second), a connection idle either way for
 * SOCKET_IDLE_MS destroyed, a refused one destroyed right after its answer; the body is
 * read up to MAX_BODY_BYTES.
 */
export function listen(
  host: string,
  port: number,
  route: Route,
  onError: (err: unknown) => void,
  onRefused: OnRefused = () => undefined,
): Promise<{ server: http.Server; address: EndpointAddress }> {
  const connections = new Map<Socket, Connection>();
  const server = http.createServer(
    {
      maxHeaderSize: MAX_HEADER_BYTES,
      requestTimeout: REQUEST_TIMEOUT_MS,
      headersTimeout: HEADERS_TIMEOUT_MS,
      keepAliveTimeout: KEEP_ALIVE_MS,
      connectionsCheckingInterval: TIMEOUT_CHECK_MS,
    },
    (req, res) => {
      const c = connections.get(req.socket);
      if (c?.refused) return void req.socket.destroy(); // parsed from a chunk the meter refused
      if (c) {
        c.current = req;
        c.active += 1;
        res.once('close', () => (c.active -= 1));
      }
      void handle(req, res, route, onRefused).catch((err: unknown) => {
        onError(err);
        if (!res.headersSent) send(res, { status: 500, json: { error: 'internal error' } });
        else res.destroy();
      });
    },
  );
  server.maxRequestsPerSocket = 100;
  // After http's own 'connection' listener, which set up the parser.
  server.on('connection', (socket: Socket) => {
    if (connections.size >= MAX_CONNECTIONS) {
      let idle: Socket | undefined;
      for (const [s, c] of connections) {
        if (c.active === 0) {
          idle = s;
          break;
        }
      }
      if (!idle) return void socket.destroy();
      connections.delete(idle);
      idle.destroy();
    }
    const c: Connection = {
      active: 0,
      current: undefined,
      inHead: true,
      headBytes: 0,
      started: false,
      run: 0,
      refused: false,
    };
    connections.set(socket, c);
    socket.once('close', () => connections.delete(socket));
    // Before the parser's listener (a 'data' listener also makes http read the socket in JS, where the meter sees it).
    socket.prependListener('data', (chunk: Buffer) => {
      if (c.refused || meterHead(c, chunk)) return;
      c.refused = true;
      onRefused(431, `headers over ${MAX_HEADER_BYTES} bytes`, {
        method: '',
        path: '',
        remote: socket.remoteAddress ?? '',
      });
      refuseSocket(socket, '431 Request Header Fields Too Large');
    });
  });
  // With no 'timeout' listener, Node destroys a socket idle this long.
  server.setTimeout(SOCKET_IDLE_MS);
  server.on('clientError', (err: NodeJS.ErrnoException, socket) => {
    // What the parser refused: headers over MAX_HEADER_BYTES are a 431, a slow client a 408, the rest a 400.
    const status =
      err.code === 'HPE_HEADER_OVERFLOW'
        ? '431 Request Header Fields Too Large'
        : err.code === 'ERR_HTTP_REQUEST_TIMEOUT'
          ? '408 Request Timeout'
          : '400 Bad Request';
    if (connections.get(socket as Socket)?.refused) return void socket.destroy(); // the meter answered already
    onRefused(Number(status.slice(0, 3)), `refused by the HTTP parser (${err.code ?? 'malformed'})`, {
      method: '',
      path: '',
      remote: (socket as { remoteAddress?: string }).remoteAddress ?? '',
    });
    refuseSocket(socket as Socket, status);
  });
  return new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen(port, host, () => {
      server.off('error', reject);
      server.on('error', onError);
      server.unref();
      const info = server.address() as AddressInfo;
      resolve({ server, address: { address: info.address, port: info.port } });
    });
  });
}

async function handle(
  req: http.IncomingMessage,
  res: http.ServerResponse,
  route: Route,
  onRefused: OnRefused,
): Promise<void> {
  const target = req.url ?? '/';
  const refuse = (status: number, error: string) => {
    onRefused(status, error, {
      method: String(req.method).slice(0, 16),
      path: target.split('?')[0]!.slice(0, 200),
      remote: req.socket.remoteAddress ?? '',
    });
    send(res, { status, json: { error } }, true);
  };
  if (Buffer.byteLength(target) > MAX_URL_BYTES) return refuse(414, 'URL too long');
  let url: URL;
  try {
    url = new URL(target, 'http://sysprobe.invalid');
  } catch {
    return refuse(400, 'malformed URL');
  }
  const declared = Number(req.headers['content-length'] ?? 0);
  if (!(declared >= 0)) return refuse(400, 'malformed Content-Length');
  if (declared > MAX_BODY_BYTES) return refuse(413, `body over ${MAX_BODY_BYTES} bytes`);
  const body = await readBody(req);
  if (body === undefined) return refuse(413, `body over ${MAX_BODY_BYTES} bytes`);
  send(res, await route(req, url, body));
}

/** The body, or undefined when it outgrows the limit (chunked bodies declare no length). */
function readBody(req: http.IncomingMessage): Promise<Buffer | undefined> {
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    let bytes = 0;
    req.on('data', (chunk: Buffer) => {
      bytes += chunk.length;
      if (bytes > MAX_BODY_BYTES) {
        req.removeAllListeners('data');
        req.resume();
        resolve(undefined);
        return;
      }
      chunks.push(chunk);
    });
    req.on('end', () => resolve(Buffer.concat(chunks)));
    req.on('error', reject);
  });
}

function send(res: http.ServerResponse, reply: Reply, close = false): void {
  const headers: Record<string, string> = {
    'cache-control': 'no-store',
    'x-content-type-options': 'nosniff',
    ...reply.headers,
  };
  if (close) headers.connection = 'close';
  if (reply.stream) {
    res.writeHead(reply.status, headers);
    reply.stream(res);
    return;
  }
  const body = reply.json === undefined ? '' : JSON.stringify(reply.json);
  headers['content-type'] ??= 'application/json; charset=utf-8';
  headers['content-length'] ??= String(Buffer.byteLength(body));
  res.writeHead(reply.status, headers);
  res.end(res.req.method === 'HEAD' ? undefined : body);
}

/** Stops accepting, and ends idle keep-alive connections; the rest end with their request. */
export function close(server: http.Server | undefined): void {
  if (!server) return;
  server.close();
  server.closeIdleConnections();
}
