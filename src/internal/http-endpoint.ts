/**
 * The probe worker's small HTTP servers (health, control) share these limits: they
 * run next to the host, so every request is bounded in size and time, nothing keeps
 * the process alive, and a misbehaving client costs little.
 */
import * as http from 'node:http';
import type { AddressInfo } from 'node:net';

/** Header bytes a request may carry; more is answered 431 by Node itself. */
export const MAX_HEADER_BYTES = 8 * 1024;
/** Request-target length; more is answered 414. */
export const MAX_URL_BYTES = 2 * 1024;
/** Body bytes a request may carry; more is answered 413. */
export const MAX_BODY_BYTES = 4 * 1024;
/** Connections one server holds at once; more are closed as they arrive, so a flood costs at most this many descriptors. */
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

/**
 * Listens on host:port and answers with `route`; resolves once listening. The server is
 * unref()ed and bounded: at most MAX_CONNECTIONS connections, headers within
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
  const server = http.createServer(
    {
      maxHeaderSize: MAX_HEADER_BYTES,
      requestTimeout: REQUEST_TIMEOUT_MS,
      headersTimeout: HEADERS_TIMEOUT_MS,
      keepAliveTimeout: KEEP_ALIVE_MS,
      connectionsCheckingInterval: TIMEOUT_CHECK_MS,
    },
    (req, res) => {
      void handle(req, res, route, onRefused).catch((err: unknown) => {
        onError(err);
        if (!res.headersSent) send(res, { status: 500, json: { error: 'internal error' } });
        else res.destroy();
      });
    },
  );
  server.maxRequestsPerSocket = 100;
  server.maxConnections = MAX_CONNECTIONS;
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
    onRefused(Number(status.slice(0, 3)), `refused by the HTTP parser (${err.code ?? 'malformed'})`, {
      method: '',
      path: '',
      remote: (socket as { remoteAddress?: string }).remoteAddress ?? '',
    });
    // end() alone waits for the client's side to close, which one that never reads never does: destroy, after a bounded wait.
    if (!socket.writable) {
      socket.destroy();
      return;
    }
    const linger = setTimeout(() => socket.destroy(), REFUSAL_LINGER_MS).unref();
    socket.once('close', () => clearTimeout(linger));
    socket.end(`HTTP/1.1 ${status}\r\nConnection: close\r\nContent-Length: 0\r\n\r\n`, () => socket.destroy());
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
