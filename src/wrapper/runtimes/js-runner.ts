/**
 * Runs a JavaScript (or compiled TypeScript) handler inside the sandbox:
 *   node js-runner.js <module path> [export name]
 * The handler is `async (task, ctx) => void` with ctx.emit(event) and ctx.log(message).
 * This file runs in the untrusted process; it imports nothing of Trace's.
 */
import { createInterface } from 'node:readline';
import { pathToFileURL } from 'node:url';

const write = (msg: unknown) => process.stdout.write(JSON.stringify(msg) + '\n');

async function main(): Promise<void> {
  const [modulePath, exportName = 'handler'] = process.argv.slice(2);
  const lines = createInterface({ input: process.stdin });
  let first: string | undefined;
  for await (const line of lines) {
    first = line;
    break;
  }
  const message = JSON.parse(first ?? '{}') as { type?: string; task?: unknown };
  if (message.type !== 'task') throw new Error('expected a task message on stdin');
  const mod = (await import(pathToFileURL(modulePath!).href)) as Record<string, unknown>;
  const handler = (mod[exportName] ?? (mod.default as Record<string, unknown> | undefined)?.[exportName] ?? mod.default) as
    | ((task: unknown, ctx: unknown) => Promise<void> | void)
    | undefined;
  if (typeof handler !== 'function') throw new Error(`${modulePath} exports no function "${exportName}"`);
  await handler(message.task, {
    emit: (event: unknown) => write({ type: 'event', event }),
    log: (msg: string, level = 'info') => write({ type: 'log', level, message: String(msg) }),
  });
  write({ type: 'done' });
}

// process.exit() drops what is still queued for a pipe: exit only once the last line is written out.
const exitAfterFlush = (code: number) => process.stdout.write('', () => process.exit(code));

main().then(
  () => exitAfterFlush(0),
  (err: Error) => {
    write({ type: 'error', message: err?.message ?? String(err) });
    exitAfterFlush(1);
  },
);
