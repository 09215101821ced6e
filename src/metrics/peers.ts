import { ErrorCode, SysprobeError } from '../errors.js';

type Resources = typeof import('@opentelemetry/resources');

/**
 * Loads an optional peer dependency (the OpenTelemetry SDK and exporters are the app's
 * choice, so sysprobe does not install them), or throws SYSPROBE_ERR_MISSING_PEER naming it.
 */
export function loadPeer<T>(name: string, why: string): T {
  try {
    return require(name) as T;
  } catch (err) {
    if ((err as { code?: unknown }).code !== 'MODULE_NOT_FOUND') throw err;
    throw new SysprobeError(
      ErrorCode.MISSING_PEER,
      `${why} needs the package ${name}, which is not installed; run: npm install ${name}`,
      { cause: err },
    );
  }
}

/** A `service.name` resource, or undefined to keep the SDK's default. */
export function serviceResource(
  serviceName: string | undefined,
  why: string,
): ReturnType<Resources['resourceFromAttributes']> | undefined {
  return serviceName
    ? loadPeer<Resources>('@opentelemetry/resources', why).resourceFromAttributes({ 'service.name': serviceName })
    : undefined;
}
