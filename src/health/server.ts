/**
 * GET /health from the probe worker: answers from the worker's own view, so it
 * answers while the main thread is blocked, and then says so.
 */
import type { Health } from './evaluate.js';
import { healthResponse } from './handler.js';
import type { Route } from '../internal/http-endpoint.js';

/** The health endpoint's routes: GET and HEAD /health; 404 elsewhere, 405 for other methods. */
export function healthRoute(evaluate: () => Promise<Health>, retryAfterSeconds: number): Route {
  return async (req, url) => {
    if (url.pathname !== '/health') return { status: 404, json: { error: 'not found' } };
    if (req.method !== 'GET' && req.method !== 'HEAD')
      return { status: 405, headers: { allow: 'GET, HEAD' }, json: { error: 'method not allowed' } };
    const health = await evaluate();
    const { status, headers } = healthResponse(health, retryAfterSeconds, true);
    delete headers['content-length']; // the server counts the body it writes
    return { status, headers, json: health };
  };
}
