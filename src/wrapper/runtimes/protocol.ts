/**
 * The user-code protocol (docs/architecture/contracts.md, "User-code runtimes"): JSON lines over
 * stdio between the wrapper and a user-code process, identical for every language.
 *
 * wrapper → stdin:  one line  {"type":"task","task":{...}}          (then stdin closes)
 * stdout → wrapper: any lines {"type":"event","event":{...}}         an event to emit
 *                             {"type":"log","level":"info","message":"..."}
 *                   last line {"type":"done"} | {"type":"error","message":"..."}
 * The process gets no credentials: not the attempt token, not the platform credential.
 */
export interface UserTask {
  task_id: string;
  attempt: number;
  dag: { name: string; version: number };
  job: { name: string; config: Record<string, unknown> };
  input: unknown;
  outputs: unknown[];
  idempotency: { producer_task_id: string; attempt: number };
}

export type UserMessage =
  | { type: 'event'; event: unknown }
  | { type: 'log'; level?: string; message: string }
  | { type: 'done' }
  | { type: 'error'; message: string };

/** Parses one line from a user process; anything else is a protocol error (the process is not trusted). */
export function parseUserMessage(line: string): UserMessage | { type: 'invalid'; reason: string } {
  let msg: unknown;
  try {
    msg = JSON.parse(line);
  } catch {
    return { type: 'invalid', reason: `not JSON: ${line.slice(0, 200)}` };
  }
  if (typeof msg !== 'object' || msg === null) return { type: 'invalid', reason: 'not an object' };
  const m = msg as Record<string, unknown>;
  switch (m.type) {
    case 'event':
      return typeof m.event === 'object' && m.event !== null ? { type: 'event', event: m.event } : { type: 'invalid', reason: 'event message without an event object' };
    case 'log':
      return { type: 'log', level: typeof m.level === 'string' ? m.level : 'info', message: String(m.message ?? '').slice(0, 4000) };
    case 'done':
      return { type: 'done' };
    case 'error':
      return { type: 'error', message: String(m.message ?? 'user code failed').slice(0, 4000) };
    default:
      return { type: 'invalid', reason: `unknown message type ${JSON.stringify(m.type)}` };
  }
}
