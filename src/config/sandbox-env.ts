import { Transform } from 'class-transformer';
import { IsIn, IsInt, Max, Min } from 'class-validator';

const UNITS: Record<string, number> = { '': 1, B: 1, KB: 1e3, MB: 1e6, GB: 1e9, KIB: 1024, MIB: 1024 ** 2, GIB: 1024 ** 3 };

/** `4GiB`, `256MiB`, `1048576`: a size in bytes (anything else is left for the validator to refuse). */
export const toBytes = ({ value }: { value: unknown }): unknown => {
  if (typeof value !== 'string') return value;
  const m = /^\s*(\d+(?:\.\d+)?)\s*([KMG]i?B|B)?\s*$/i.exec(value);
  if (!m) return value;
  return Math.floor(Number(m[1]) * UNITS[(m[2] ?? '').toUpperCase()]!);
};
const toInt = ({ value }: { value: unknown }): unknown =>
  typeof value === 'string' && /^-?\d+$/.test(value.trim()) ? Number(value) : value;
const SIZE = (name: string) => ({ message: `${name} must be a size such as 1048576, 256MiB or 4GiB` });

/**
 * How the wrapper confines user code and bounds what it writes (ADR 0020). Shared by the wrapper
 * role's config and the Lambda handler's, which reads the same variables from its environment.
 */
export class SandboxEnv {
  @IsIn(['auto', 'isolated', 'userns', 'none'], { message: 'TRACE_SANDBOX must be auto, isolated, userns or none' })
  TRACE_SANDBOX!: 'auto' | 'isolated' | 'userns' | 'none';

  @Transform(toInt)
  @IsInt()
  @Min(1000)
  @Max(2 ** 31 - 2 ** 20)
  TRACE_SANDBOX_UID_BASE!: number;

  @Transform(toInt)
  @IsInt()
  @Min(1)
  @Max(65536)
  TRACE_SANDBOX_UID_COUNT!: number;

  @Transform(toBytes)
  @IsInt(SIZE('TRACE_SANDBOX_MEMORY_LIMIT'))
  @Min(256 * 1024 ** 2, { message: 'TRACE_SANDBOX_MEMORY_LIMIT must be at least 256MiB (a runtime reserves address space)' })
  TRACE_SANDBOX_MEMORY_LIMIT!: number;

  @Transform(toBytes)
  @IsInt(SIZE('TRACE_SANDBOX_TMP_SIZE'))
  @Min(1024 ** 2, { message: 'TRACE_SANDBOX_TMP_SIZE must be at least 1MiB' })
  TRACE_SANDBOX_TMP_SIZE!: number;

  @Transform(toInt)
  @IsInt()
  @Min(1)
  @Max(65536)
  TRACE_SANDBOX_MAX_PROCESSES!: number;

  @Transform(toInt)
  @IsInt()
  @Min(16)
  @Max(1048576)
  TRACE_SANDBOX_MAX_OPEN_FILES!: number;

  @Transform(toBytes)
  @IsInt(SIZE('TRACE_SANDBOX_MAX_FILE_SIZE'))
  @Min(1024 ** 2, { message: 'TRACE_SANDBOX_MAX_FILE_SIZE must be at least 1MiB' })
  TRACE_SANDBOX_MAX_FILE_SIZE!: number;

  @Transform(toBytes)
  @IsInt(SIZE('TRACE_USER_OUTPUT_MAX_LINE_BYTES'))
  @Min(70 * 1024, { message: 'TRACE_USER_OUTPUT_MAX_LINE_BYTES must be at least 70KiB (an event payload may be 64 KiB)' })
  @Max(64 * 1024 ** 2, { message: 'TRACE_USER_OUTPUT_MAX_LINE_BYTES must be at most 64MiB' })
  TRACE_USER_OUTPUT_MAX_LINE_BYTES!: number;

  @Transform(toBytes)
  @IsInt(SIZE('TRACE_USER_OUTPUT_MAX_STDOUT_BYTES'))
  @Min(1024 ** 2, { message: 'TRACE_USER_OUTPUT_MAX_STDOUT_BYTES must be at least 1MiB' })
  TRACE_USER_OUTPUT_MAX_STDOUT_BYTES!: number;

  @Transform(toBytes)
  @IsInt(SIZE('TRACE_USER_OUTPUT_MAX_STDERR_BYTES'))
  @Min(64 * 1024, { message: 'TRACE_USER_OUTPUT_MAX_STDERR_BYTES must be at least 64KiB' })
  TRACE_USER_OUTPUT_MAX_STDERR_BYTES!: number;
}

export const SANDBOX_ENV_KEYS = [
  'TRACE_SANDBOX',
  'TRACE_SANDBOX_UID_BASE',
  'TRACE_SANDBOX_UID_COUNT',
  'TRACE_SANDBOX_MEMORY_LIMIT',
  'TRACE_SANDBOX_TMP_SIZE',
  'TRACE_SANDBOX_MAX_PROCESSES',
  'TRACE_SANDBOX_MAX_OPEN_FILES',
  'TRACE_SANDBOX_MAX_FILE_SIZE',
  'TRACE_USER_OUTPUT_MAX_LINE_BYTES',
  'TRACE_USER_OUTPUT_MAX_STDOUT_BYTES',
  'TRACE_USER_OUTPUT_MAX_STDERR_BYTES',
] as const;

/** The sandbox settings as the wrapper uses them. */
export interface SandboxConfig {
  readonly mode: 'auto' | 'isolated' | 'userns' | 'none';
  readonly uidBase: number;
  readonly uidCount: number;
  readonly memoryBytes: number;
  readonly tmpBytes: number;
  readonly maxProcesses: number;
  readonly maxOpenFiles: number;
  readonly maxFileBytes: number;
  readonly output: { readonly maxLineBytes: number; readonly maxStdoutBytes: number; readonly maxStderrBytes: number };
}

export function sandboxConfigOf(raw: SandboxEnv): SandboxConfig {
  return {
    mode: raw.TRACE_SANDBOX,
    uidBase: raw.TRACE_SANDBOX_UID_BASE,
    uidCount: raw.TRACE_SANDBOX_UID_COUNT,
    memoryBytes: raw.TRACE_SANDBOX_MEMORY_LIMIT,
    tmpBytes: raw.TRACE_SANDBOX_TMP_SIZE,
    maxProcesses: raw.TRACE_SANDBOX_MAX_PROCESSES,
    maxOpenFiles: raw.TRACE_SANDBOX_MAX_OPEN_FILES,
    maxFileBytes: raw.TRACE_SANDBOX_MAX_FILE_SIZE,
    output: {
      maxLineBytes: raw.TRACE_USER_OUTPUT_MAX_LINE_BYTES,
      maxStdoutBytes: raw.TRACE_USER_OUTPUT_MAX_STDOUT_BYTES,
      maxStderrBytes: raw.TRACE_USER_OUTPUT_MAX_STDERR_BYTES,
    },
  };
}

/** The variables as a child process's environment (the Lambda handler a dispatcher starts). */
export function sandboxEnvOf(c: SandboxConfig): Record<string, string> {
  return {
    TRACE_SANDBOX: c.mode,
    TRACE_SANDBOX_UID_BASE: String(c.uidBase),
    TRACE_SANDBOX_UID_COUNT: String(c.uidCount),
    TRACE_SANDBOX_MEMORY_LIMIT: String(c.memoryBytes),
    TRACE_SANDBOX_TMP_SIZE: String(c.tmpBytes),
    TRACE_SANDBOX_MAX_PROCESSES: String(c.maxProcesses),
    TRACE_SANDBOX_MAX_OPEN_FILES: String(c.maxOpenFiles),
    TRACE_SANDBOX_MAX_FILE_SIZE: String(c.maxFileBytes),
    TRACE_USER_OUTPUT_MAX_LINE_BYTES: String(c.output.maxLineBytes),
    TRACE_USER_OUTPUT_MAX_STDOUT_BYTES: String(c.output.maxStdoutBytes),
    TRACE_USER_OUTPUT_MAX_STDERR_BYTES: String(c.output.maxStderrBytes),
  };
}
