/**
 * Whether an error means the system database cannot serve us right now — nothing listens, the
 * connection dropped, the server is shutting down, starting up or recovering — rather than a fault
 * in what we asked of it. Such errors answer 503 `database_unavailable` (try again shortly), not a
 * 500 (ADR 0021).
 */
export function isDatabaseUnavailable(err: unknown): boolean {
  return unavailable(err, 0);
}

/** Socket errors on the way to the server (`ENOENT` only when connecting: the Unix socket is gone). */
const SOCKET_ERRORS = new Set(['ECONNREFUSED', 'ECONNRESET', 'EPIPE', 'ETIMEDOUT', 'EHOSTUNREACH', 'ENETUNREACH', 'EHOSTDOWN', 'EAI_AGAIN']);

/**
 * SQLSTATEs: 57P01 admin_shutdown (also a backend ended by an immediate shutdown), 57P02
 * crash_shutdown, 57P03 cannot_connect_now (starting up, in recovery, shutting down); and the
 * whole class 08, connection exceptions.
 */
const SERVER_STATES = new Set(['57P01', '57P02', '57P03']);

/** node-postgres reports a connection lost under it, or none to be had, by message alone. */
const DRIVER_MESSAGES = [
  /^Connection terminated/,
  /^Client has encountered a connection error and is not queryable/,
  /^timeout exceeded when trying to connect/,
];

function unavailable(err: unknown, depth: number): boolean {
  if (typeof err !== 'object' || err === null || depth > 3) return false;
  // The AWS SDK's network errors carry `$metadata`: an object store or queue failing is not the database.
  if ('$metadata' in err) return false;
  const e = err as { code?: unknown; syscall?: unknown; message?: unknown; driverError?: unknown; errors?: unknown };
  if (typeof e.code === 'string') {
    if (SOCKET_ERRORS.has(e.code)) return true;
    if (e.code === 'ENOENT' && e.syscall === 'connect') return true;
    if (SERVER_STATES.has(e.code) || /^08[0-9A-Z]{3}$/.test(e.code)) return true;
  }
  if (typeof e.message === 'string' && DRIVER_MESSAGES.some((m) => m.test(e.message as string))) return true;
  // TypeORM wraps the driver's error; Node wraps one error per address tried in an AggregateError.
  // (Not `cause`: a failed fetch to another service carries its socket error there.)
  if (unavailable(e.driverError, depth + 1)) return true;
  return Array.isArray(e.errors) && e.errors.some((inner) => unavailable(inner, depth + 1));
}
