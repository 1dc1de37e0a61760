import { parseArgs } from 'node:util';

export const USAGE = `Usage: trace [--role <roles>]

  --role <roles>   comma-separated roles to run: all (default), dispatcher, registry,
                   query, sink, delivery, wrapper. Also TRACE_ROLES; the flag wins.
  --help           show this help

Every setting is an environment variable; see docs/configuration.md.`;

export interface CliArgs {
  roles?: string;
  help: boolean;
}

/** Strict: an unknown flag or a stray argument is an error, not something to ignore. */
export function parseCliArgs(argv: string[]): CliArgs {
  const { values, positionals } = parseArgs({
    args: argv,
    options: { role: { type: 'string' }, help: { type: 'boolean', short: 'h' } },
    strict: true,
    allowPositionals: true,
  });
  if (positionals.length > 0) throw new Error(`unexpected argument "${positionals[0]}"`);
  return { roles: values.role, help: values.help ?? false };
}
