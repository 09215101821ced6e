/**
 * What the main thread does with each message of its worker: logs, stalls (explained, counted,
 * recorded in an incident, emitted), rule firings (the main thread's captures, the incident,
 * the rule's callbacks), captures, probe runs, the worker's requests of the main thread, and
 * where its endpoints listen. One exhaustive switch; an unknown message is logged.
 */
import { describeError, ErrorCode, SysprobeError } from '../errors.js';
import type { HostRequest, WorkerToMain } from '../protocol.js';
import type { StallEvent } from '../stalls/stall-event.js';
import { currentThread } from '../stalls/stall.js';
import type { RuleEvent } from '../captures/results.js';
import type { HealthReason } from '../health/evaluate.js';
import { writeDiagnosticReport } from '../crash/diagnostic-report.js';
import type { ProbeParts } from './parts.js';

export function onWorkerMessage(parts: ProbeParts, message: WorkerToMain): void {
  switch (message.type) {
    case 'log':
      parts.logger[message.level](message.fields, message.msg);
      if (message.level === 'error') parts.exporter.countError(String(message.fields.component ?? 'worker'));
      return;
    case 'stall':
      onStall(parts, message);
      return;
    case 'rule':
      void onRule(parts, { firing: message.firing, captures: message.captures }, message.unhealthy);
      return;
    case 'captured':
      parts.captured(message.capture);
      return;
    case 'probeResult': {
      const { result, failing } = message;
      parts.exporter.recordProbe(result);
      parts.dependencies?.noteProbe(result);
      if (result.outcome !== 'success')
        parts.logger.debug(
          { probe: result.name, target: result.target, outcome: result.outcome, error: result.error },
          'sysprobe probe run failed',
        );
      parts.probeRuns.set(result.name, { name: result.name, target: result.target, lastResult: result, failing });
      return;
    }
    case 'hostRequest':
      void answerHost(parts, message.id, message.request);
      return;
    case 'ready':
      if (message.servers) parts.servers = message.servers;
      // At start, begin() turns a failed bind into an error; after a worker restart it can only be logged.
      for (const [name, server] of Object.entries(parts.servers)) {
        if (server && 'error' in server && parts.supervisor.restarts)
          parts.logger.error(
            { component: name, err: { message: server.error } },
            `sysprobe ${name} endpoint could not listen after a worker restart`,
          );
      }
      return;
    case 'response':
      return; // handled by the supervisor
    default: {
      const unknown: never = message;
      parts.logger.error(
        { message: String((unknown as { type?: unknown }).type) },
        'sysprobe got an unknown message from its worker',
      );
    }
  }
}

/** A stall ended: explained, counted, recorded in the incident (unless it was sysprobe's own pause), logged and emitted. */
function onStall(parts: ProbeParts, message: Extract<WorkerToMain, { type: 'stall' }>): void {
  const { options, exporter, logger } = parts;
  const { startedAt, durationMs, stack, capture, facts, throttledMs } = message;
  const { selfPaused } = facts;
  // A thread registered with watchThread(): not this thread's loop, requests or GC.
  const watched = message.thread !== undefined;
  const thread = message.thread ?? currentThread();
  // Explained once the requests that queued behind it have started (a few tens of ms after it ended).
  const explanation = parts.stallExplainer.explain({
    startedAt,
    durationMs,
    stack,
    captureHow: capture.how,
    selfPaused,
    requests: facts.requests,
    observations: facts.observations,
    ...(throttledMs !== undefined ? { throttledMs } : {}),
    ...(watched ? { otherThread: true } : {}),
  });
  exporter.recordStall(durationMs, capture.how, watched);
  if (!watched) {
    // A reading now (the stall's end), so a stretched period does not leave it stale. Not a wake(): an idle process
    // stalls too (a GC, the host descheduling it); a busy one sets the period back at its next reading.
    parts.heartbeat.refresh();
    // The heartbeat's gaps already hold the stall; the native watch reports it only here.
    if (parts.loopWatch.kind === 'native' && options.samplers.eventLoop) exporter.recordDelay(durationMs);
  }
  if (!selfPaused)
    parts.incidents?.stalled(
      {
        kind: 'stall',
        rule: 'stall',
        value: 'eventLoop.stallMs',
        observed: durationMs,
        threshold: options.stallThresholdMs,
        at: startedAt,
        ...(throttledMs !== undefined ? { throttledMs } : {}),
        ...(watched ? { thread } : {}),
      },
      stack,
      capture,
      explanation,
    );
  void explanation
    .then(({ requests, queued, diagnosis }) => {
      const event: StallEvent = {
        thread,
        startedAt,
        durationMs,
        stack,
        capture,
        cause: diagnosis.cause,
        diagnosis,
        requests,
        ...(queued ? { queued } : {}),
        ...(throttledMs !== undefined ? { throttledMs } : {}),
      };
      logger.warn(
        {
          thread: event.thread.name,
          startedAt,
          durationMs,
          thresholdMs: options.stallThresholdMs,
          capture,
          cause: diagnosis.cause,
          why: diagnosis.why,
          throttledMs,
          // The top frames and requests are what a person reads first; the event carries them all.
          top: stack?.slice(0, 5).map((f) => `${f.functionName} (${f.url}:${f.lineNumber + 1}:${f.columnNumber + 1})`),
          requests: requests
            .slice(0, 5)
            .map((r) => `${r.method} ${r.route ?? r.path}${r.traceId ? ` trace ${r.traceId}` : ''}`),
          ...(queued ? { queued: queued.count } : {}),
          ...(capture.span ? { traceId: capture.span.traceId, spanId: capture.span.spanId } : {}),
        },
        'event loop stalled',
      );
      parts.emit('stall', event);
    })
    .catch((err: unknown) => parts.failed('stalls', err));
}

/**
 * A rule fired and the worker took its captures: the main thread's own (a heap snapshot), the
 * incident, the log line, the unhealthy mark the worker decided, the rule's callbacks, the event.
 */
async function onRule(parts: ProbeParts, event: RuleEvent, unhealthy: HealthReason | undefined): Promise<void> {
  const { firing, captures } = event;
  if (unhealthy) parts.unhealthy.keep(unhealthy);
  const rule = parts.options.rules.find((r) => r.condition.name === firing.rule);
  // Heap snapshots are not deduplicated within an incident: a diff needs two or more; heapSnapshotsPerDay bounds them.
  if (rule?.captureHeapSnapshot && !parts.stopped()) {
    try {
      captures.heapSnapshot = await parts.snapshots.capture({ trigger: firing });
    } catch (err) {
      (captures.notTaken ??= []).push(`heapSnapshot: ${describeError(err).message}`);
    }
  }
  parts.exporter.recordRule(firing.rule);
  parts.incidents?.ruleFired(
    {
      kind: 'rule',
      rule: firing.rule,
      value: firing.value,
      observed: firing.observed,
      threshold: firing.threshold,
      at: firing.firedAt,
    },
    captures,
  );
  parts.logger.warn(
    {
      ...firing,
      profile: captures.cpuProfile?.file,
      allocationProfile: captures.allocationProfile?.file,
      heapSnapshot: captures.heapSnapshot?.file,
      stackTop: captures.stack?.[0]?.functionName,
      notTaken: captures.notTaken,
    },
    'sysprobe rule fired',
  );
  for (const callback of rule?.callbacks ?? []) {
    try {
      callback(firing);
    } catch (err) {
      parts.logger.error({ rule: firing.rule, err: describeError(err) }, 'a sysprobe rule action threw');
    }
  }
  parts.emit('rule', event);
}

/** Does what the worker asked of the main thread (a heap snapshot for the control endpoint, a diagnostic report, a worker host's profile) and answers. */
async function answerHost(parts: ProbeParts, id: number, request: HostRequest): Promise<void> {
  try {
    let value: unknown;
    if (request.kind === 'captureHeapSnapshot') value = await parts.snapshots.capture({ trigger: request.trigger });
    // Near a memory limit: what is safe instead of a snapshot (src/crash).
    else if (request.kind === 'diagnosticReport')
      value = await writeDiagnosticReport(parts.sink, { trigger: request.trigger });
    // A worker-hosted probe: this thread profiles itself; the probe worker writes the files.
    else if ((request.kind === 'hostCpuProfile' || request.kind === 'hostAllocationProfile') && parts.hostProfiler)
      value = await parts.hostProfiler.run(request).catch((err: unknown) => {
        parts.logger.debug({ err: describeError(err), kind: request.kind }, 'sysprobe host profile failed');
        throw err;
      });
    else
      throw new SysprobeError(
        ErrorCode.CAPTURE_FAILED,
        `unknown host request ${String((request as { kind?: unknown }).kind)}`,
      );
    parts.supervisor.post({ type: 'hostResponse', id, ok: true, value });
  } catch (err) {
    const { message, code } = describeError(err);
    parts.supervisor.post({
      type: 'hostResponse',
      id,
      ok: false,
      error: { code: code ?? ErrorCode.CAPTURE_FAILED, message },
    });
  }
}
