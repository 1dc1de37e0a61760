import { HttpStatus } from '@nestjs/common';
import { TraceError } from '../common/errors';
import { DATASET_NAME_PATTERN } from '../registry/dags/dag-spec';

/**
 * The Query Service's error codes, in one place (docs/architecture/query_service.md lists what
 * each answers). Clients switch on the code; the message says what to change.
 */
export const QueryErrors = {
  /** The gate's refusals (invalid_sql, statement_not_allowed, function_not_allowed, name_not_allowed). */
  refused: (code: string, message: string) => new TraceError(HttpStatus.BAD_REQUEST, code, message),
  /** DuckDB's own error while binding or running (its first line, server paths scrubbed). */
  failed: (message: string) => new TraceError(HttpStatus.BAD_REQUEST, 'query_failed', message),
  timeout: (ms: number, setting: string) => new TraceError(HttpStatus.REQUEST_TIMEOUT, 'query_timeout', `the query was interrupted after ${ms} ms (${setting})`),
  memoryLimit: (limit: string, setting: string, detail?: string) =>
    new TraceError(HttpStatus.UNPROCESSABLE_ENTITY, 'query_memory_limit', `the query needed more memory than its limit of ${limit} (${setting})${detail ? `: ${detail}` : ''}`),
  resultTooLarge: (limit: string) =>
    new TraceError(HttpStatus.UNPROCESSABLE_ENTITY, 'result_too_large', `the answer is larger than ${limit} (TRACE_QUERY_MAX_RESULT_SIZE); select fewer rows or columns, or run it with "mode": "batch"`),
  workerDied: (what: string) =>
    new TraceError(HttpStatus.INTERNAL_SERVER_ERROR, 'query_worker_died', `the process running the query stopped unexpectedly (${what}); it has been replaced, try again`),
  busy: (workers: number, setting: string, waitedMs: number) =>
    new TraceError(HttpStatus.SERVICE_UNAVAILABLE, 'query_service_busy', `all ${workers} query workers of this process stayed busy for ${waitedMs} ms (${setting}); try again`),
  unavailable: () => new TraceError(HttpStatus.SERVICE_UNAVAILABLE, 'query_service_unavailable', 'the Query Service cannot run queries right now (its worker processes could not start, or it is stopping)'),
  tooMany: (inFlight: number, what: string, max: number) =>
    new TraceError(HttpStatus.TOO_MANY_REQUESTS, 'too_many_queries', `your org already runs ${inFlight} ${what} (the limit is ${max}); try again when one has finished`),
  datasetNotFound: (names: string[]) =>
    new TraceError(HttpStatus.NOT_FOUND, 'dataset_not_found', `no dataset named ${names.map((m) => `"${m}"`).join(', ')} (or you may not read it)${nameHint(names)}`),
  datasetEmpty: (name: string) => new TraceError(HttpStatus.CONFLICT, 'dataset_empty', `dataset "${name}" has no data in its current version yet`),
  runNotFound: (id: string) => new TraceError(HttpStatus.NOT_FOUND, 'query_not_found', `no query ${id}`),
  resultNotReady: (id: string, status: string) => new TraceError(HttpStatus.CONFLICT, 'result_not_ready', `query ${id} is ${status}; its result exists once it has succeeded`),
  resultGone: (id: string) => new TraceError(HttpStatus.GONE, 'result_gone', `the result of query ${id} is no longer in the object store`),
};

/** Names are matched exactly as written; one that no dataset can have (`MyData`) says what names look like. */
function nameHint(names: string[]): string {
  const bad = names.find((n) => !DATASET_NAME_PATTERN.test(n));
  if (bad === undefined) return '';
  const lower = bad.toLowerCase();
  const suggestion = DATASET_NAME_PATTERN.test(lower) ? ` (did you mean "${lower}"?)` : '';
  return `; dataset names are lower snake_case, ^[a-z][a-z0-9_]{0,127}$${suggestion}`;
}
