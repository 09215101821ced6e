/**
 * Health over HTTP for the app's own server: node:http, Express and Fastify.
 * 200 while ok or degraded, 503 with Retry-After when unhealthy; a JSON body,
 * never cached. These run on the main thread, so they answer only when the loop
 * turns; the worker-served endpoint (`health.port`) answers during a stall too.
 */
import type { IncomingMessage, ServerResponse } from 'node:http';
import type { Health } from './evaluate.js';

/** What the handlers need of a probe. */
export interface HealthProvider {
  health(): Health;
  /** The `Retry-After` of a 503, seconds (a probe gives its `health.retryAfterSeconds`). Default 5. */
  readonly retryAfterSeconds?: number;
}

/** Status code, headers and body of a health answer; shared with the worker's server. */
export function healthResponse(
  health: Health,
  retryAfterSeconds: number,
  head = false,
): { status: number; headers: Record<string, string>; body: string } {
  const body = head ? '' : JSON.stringify(health);
  const status = health.status === 'unhealthy' ? 503 : 200;
  const headers: Record<string, string> = {
    'content-type': 'application/json; charset=utf-8',
    'cache-control': 'no-store',
    'content-length': String(head ? Buffer.byteLength(JSON.stringify(health)) : Buffer.byteLength(body)),
  };
  if (status === 503) headers['retry-after'] = String(retryAfterSeconds);
  return { status, headers, body };
}

/** A Fastify reply, as far as the handler uses it. */
export interface FastifyReplyLike {
  code(status: number): FastifyReplyLike;
  headers(headers: Record<string, string>): FastifyReplyLike;
  send(body: string): FastifyReplyLike;
}

/**
 * A request handler answering with `probe.health()`: `(req, res)` for node:http and
 * Express (`app.get('/health', healthHandler(probe))`), and also `(request, reply)` for
 * Fastify (`fastify.get('/health', healthHandler(probe))`): it tells them apart by the
 * response object.
 */
export function healthHandler(
  probe: HealthProvider,
): (req: IncomingMessage | unknown, res: ServerResponse | FastifyReplyLike | unknown) => void {
  return (req, res) => {
    if (isFastifyReply(res)) return void answerFastify(probe, res);
    const response = res as ServerResponse;
    const head = (req as IncomingMessage | undefined)?.method === 'HEAD';
    const { status, headers, body } = healthResponse(probe.health(), probe.retryAfterSeconds ?? 5, head);
    response.writeHead(status, headers);
    response.end(body);
  };
}

/** The Fastify form, for those who prefer to say so: `fastify.get('/health', fastifyHealthHandler(probe))`. */
export function fastifyHealthHandler(
  probe: HealthProvider,
): (request: unknown, reply: FastifyReplyLike) => FastifyReplyLike {
  return (_request, reply) => answerFastify(probe, reply);
}

function answerFastify(probe: HealthProvider, reply: FastifyReplyLike): FastifyReplyLike {
  // Fastify computes content-length and handles HEAD itself.
  const { status, headers, body } = healthResponse(probe.health(), probe.retryAfterSeconds ?? 5);
  delete headers['content-length'];
  return reply.code(status).headers(headers).send(body);
}

function isFastifyReply(res: unknown): res is FastifyReplyLike {
  const r = res as Record<string, unknown> | undefined;
  return (
    typeof r === 'object' &&
    r !== null &&
    typeof r.writeHead !== 'function' &&
    typeof r.code === 'function' &&
    typeof r.send === 'function'
  );
}
