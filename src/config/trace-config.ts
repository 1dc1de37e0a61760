import { plainToInstance, Transform } from 'class-transformer';
import {
  IsBoolean,
  IsIn,
  IsInt,
  IsOptional,
  IsString,
  Matches,
  Max,
  Min,
  MinLength,
  ValidateIf,
  validateSync,
  ValidationError,
} from 'class-validator';
import { parse as parseEnvFile } from 'dotenv';
import { readFileSync } from 'node:fs';
import { isAbsolute, join, resolve } from 'node:path';
import { parseRoles, Role } from './roles';
import { SANDBOX_ENV_KEYS, type SandboxConfig, sandboxConfigOf, SandboxEnv } from './sandbox-env';
import { projectRoot } from './project-root';

const emptyToUndefined = ({ value }: { value: unknown }): unknown =>
  value === '' || value === undefined ? undefined : value;
const toInt = ({ value }: { value: unknown }): unknown =>
  typeof value === 'string' && /^-?\d+$/.test(value.trim()) ? Number(value) : value;
const toBool = ({ value }: { value: unknown }): unknown => {
  if (typeof value !== 'string') return value;
  const v = value.trim().toLowerCase();
  if (v === 'true' || v === '1') return true;
  if (v === 'false' || v === '0') return false;
  return value;
};

/** A size as DuckDB reads one: KB, MB, GB are powers of 1000; KiB, MiB, GiB of 1024. */
const SIZE = /^\d+(\.\d+)?\s?(KB|MB|GB|KiB|MiB|GiB)$/;
const SIZE_UNITS: Record<string, number> = { KB: 1e3, MB: 1e6, GB: 1e9, KiB: 2 ** 10, MiB: 2 ** 20, GiB: 2 ** 30 };

/** The bytes of a size that matched {@link SIZE}. */
export function sizeInBytes(size: string): number {
  const m = /^(\d+(?:\.\d+)?)\s?([KMG]i?B)$/.exec(size);
  if (!m) throw new Error(`not a size: ${size}`);
  return Math.floor(Number(m[1]) * SIZE_UNITS[m[2]!]!);
}

/**
 * The raw settings, named exactly like the environment variables that set them.
 * docs/configuration.md documents every one; config/default.env holds the defaults.
 */
export class TraceEnv extends SandboxEnv {
  @IsString()
  TRACE_ROLES!: string;

  @IsString()
  HOST!: string;

  @Transform(toInt)
  @Min(0)
  @Max(65535)
  @IsInt()
  PORT!: number;

  @Transform(emptyToUndefined)
  @IsOptional()
  @Matches(/^postgres(ql)?:\/\/.+/, { message: 'DATABASE_URL must be a postgres:// or postgresql:// URL' })
  DATABASE_URL?: string;

  @Transform(toInt)
  @Min(1)
  @Max(200)
  @IsInt()
  DATABASE_POOL_SIZE!: number;

  @IsString()
  @MinLength(1)
  TRACE_DATA_DIR!: string;

  @IsString()
  @Matches(/^[a-z_][a-z0-9_-]{0,31}$/, { message: 'TRACE_EMBEDDED_PG_OS_USER must be a valid OS user name' })
  TRACE_EMBEDDED_PG_OS_USER!: string;

  @Transform(toBool)
  @IsBoolean()
  TRACE_RUN_MIGRATIONS!: boolean;

  @IsIn(['auto', 'true', 'false'])
  TRACE_BOOTSTRAP_DEV_ORG!: 'auto' | 'true' | 'false';

  @Transform(emptyToUndefined)
  @IsOptional()
  @Matches(/^trc_[A-Za-z0-9_\-.]{20,252}$/, {
    message: 'TRACE_DEV_TOKEN must start with "trc_" followed by 20 to 252 letters, digits, "_", "-" or "."',
  })
  TRACE_DEV_TOKEN?: string;

  @Transform(emptyToUndefined)
  @IsOptional()
  @Matches(/^[A-Za-z0-9+/]{43}=$/, { message: 'TRACE_SECRETS_KEY must be 32 bytes in base64 (44 characters, e.g. from `openssl rand -base64 32`)' })
  TRACE_SECRETS_KEY?: string;

  @Transform(emptyToUndefined)
  @IsOptional()
  @Matches(/^[A-Za-z0-9+/=_-]{32,256}$/, { message: 'TRACE_INTERNAL_TOKEN must be 32 to 256 characters (base64 or base64url)' })
  TRACE_INTERNAL_TOKEN?: string;

  @Transform(emptyToUndefined)
  @IsOptional()
  @Matches(/^https?:\/\/[^\s/]+(\/.*)?$/, { message: 'TRACE_DISPATCHER_URL must be an http(s) URL' })
  TRACE_DISPATCHER_URL?: string;

  @IsIn(['local', 'sqs'])
  TRACE_DISPATCH_TRANSPORT!: 'local' | 'sqs';

  @Transform(emptyToUndefined)
  @ValidateIf((o: TraceEnv) => o.TRACE_DISPATCH_TRANSPORT === 'sqs' || o.TRACE_SQS_QUEUE_URL !== undefined)
  @Matches(/^https?:\/\/\S+$/, { message: 'TRACE_SQS_QUEUE_URL must be the queue URL (required when TRACE_DISPATCH_TRANSPORT=sqs)' })
  TRACE_SQS_QUEUE_URL?: string;

  @Matches(/^[a-z]{2}(-[a-z]+)+-\d$/, { message: 'TRACE_AWS_REGION must be an AWS region such as us-east-1' })
  TRACE_AWS_REGION!: string;

  @Transform(emptyToUndefined)
  @IsOptional()
  @Matches(/^https?:\/\/\S+$/, { message: 'TRACE_AWS_ENDPOINT must be an http(s) URL' })
  TRACE_AWS_ENDPOINT?: string;

  @Transform(toInt)
  @Min(10)
  @IsInt()
  TRACE_DISPATCH_POLL_MS!: number;

  @Transform(toInt)
  @Min(10)
  @IsInt()
  TRACE_REAPER_INTERVAL_MS!: number;

  @Transform(toInt)
  @Min(1)
  @Max(256)
  @IsInt()
  TRACE_WRAPPER_CONCURRENCY!: number;

  @IsString()
  @MinLength(1)
  TRACE_CODE_ROOT!: string;

  @Transform(toInt)
  @Min(100)
  @IsInt()
  TRACE_QUERY_TIMEOUT_MS!: number;

  @Transform(toInt)
  @Min(1)
  @Max(1_000_000)
  @IsInt()
  TRACE_QUERY_MAX_ROWS!: number;

  @Matches(SIZE, { message: 'TRACE_QUERY_MEMORY_LIMIT must be a size such as 512MB or 2GB' })
  TRACE_QUERY_MEMORY_LIMIT!: string;

  @Transform(toInt)
  @Min(1)
  @Max(64)
  @IsInt()
  TRACE_QUERY_THREADS!: number;

  @Transform(toInt)
  @Min(1)
  @Max(1000)
  @IsInt()
  TRACE_QUERY_MAX_CONCURRENT_PER_ORG!: number;

  @Transform(toInt)
  @Min(1000)
  @IsInt()
  TRACE_QUERY_BATCH_TIMEOUT_MS!: number;

  @Matches(SIZE, { message: 'TRACE_QUERY_BATCH_MEMORY_LIMIT must be a size such as 512MB or 2GB' })
  TRACE_QUERY_BATCH_MEMORY_LIMIT!: string;

  @Transform(toInt)
  @Min(1)
  @Max(1000)
  @IsInt()
  TRACE_QUERY_BATCH_MAX_CONCURRENT_PER_ORG!: number;

  @Transform(toInt)
  @Min(1)
  @Max(256)
  @IsInt()
  TRACE_QUERY_WORKERS!: number;

  @Transform(toInt)
  @Min(1)
  @Max(256)
  @IsInt()
  TRACE_QUERY_BATCH_WORKERS!: number;

  @Matches(SIZE, { message: 'TRACE_QUERY_MAX_RESULT_SIZE must be a size such as 32MB' })
  TRACE_QUERY_MAX_RESULT_SIZE!: string;

  @IsIn(['local', 's3'])
  TRACE_OBJECT_STORE!: 'local' | 's3';

  @Transform(emptyToUndefined)
  @IsOptional()
  @IsString()
  TRACE_OBJECT_STORE_DIR?: string;

  @Transform(emptyToUndefined)
  @ValidateIf((o: TraceEnv) => o.TRACE_OBJECT_STORE === 's3' || o.TRACE_S3_BUCKET !== undefined)
  @Matches(/^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$/, { message: 'TRACE_S3_BUCKET must be an S3 bucket name (required when TRACE_OBJECT_STORE=s3)' })
  TRACE_S3_BUCKET?: string;

  @Transform(emptyToUndefined)
  @IsOptional()
  @IsString()
  TRACE_SCRATCH_DIR?: string;

  @IsIn(['local', 'aws'])
  TRACE_LAMBDA_INVOKER!: 'local' | 'aws';

  @Matches(/^([A-Za-z0-9:_-]|\{org_id\}){1,140}$/, { message: 'TRACE_LAMBDA_FUNCTION must be a Lambda function name or ARN, optionally with {org_id} (one function per org)' })
  TRACE_LAMBDA_FUNCTION!: string;

  @IsIn(['error', 'warn', 'info', 'debug'])
  LOG_LEVEL!: LogLevel;

  @Transform(toInt)
  @IsInt()
  @Min(100)
  TRACE_HEARTBEAT_INTERVAL_MS!: number;

  @Transform(toInt)
  @IsInt()
  @Min(1000)
  TRACE_NODE_EXPIRY_MS!: number;

  @Transform(toInt)
  @IsInt()
  @Min(0)
  TRACE_SHUTDOWN_TIMEOUT_MS!: number;

  @Transform(toInt)
  @IsInt()
  @Min(0)
  TRACE_DATABASE_LOST_EXIT_MS!: number;
}

export type LogLevel = 'error' | 'warn' | 'info' | 'debug';

/** The validated, typed configuration every module reads. Built once, at start-up. */
export class TraceConfig {
  constructor(
    readonly roles: readonly Role[],
    readonly http: { readonly host: string; readonly port: number },
    readonly database: {
      /** Set when an external server is used; undefined means "start the embedded one". */
      readonly url?: string;
      readonly poolSize: number;
      readonly runMigrations: boolean;
    },
    readonly dataDir: string,
    readonly embeddedPostgres: { readonly osUser: string },
    readonly bootstrap: { readonly devOrg: boolean; readonly devToken?: string },
    /** Undefined: use (or create) the key file in the data directory. */
    readonly secretsKey: Buffer | undefined,
    readonly dispatch: {
      /** Undefined: use (or create) the token file in the data directory. */
      readonly internalToken?: string;
      /** Undefined: this process. */
      readonly dispatcherUrl?: string;
      readonly transport: 'local' | 'sqs';
      readonly sqs?: { readonly queueUrl: string };
      readonly aws: { readonly region: string; readonly endpoint?: string };
      readonly pollMs: number;
      readonly reaperIntervalMs: number;
      readonly wrapperConcurrency: number;
      /** How user code is confined and what it may write (ADR 0020). */
      readonly sandbox: SandboxConfig;
      readonly lambda: { readonly invoker: 'local' | 'aws'; readonly functionName: string };
      /** Where user-code entry points are resolved; they may not leave it. */
      readonly codeRoot: string;
    },
    readonly query: {
      readonly timeoutMs: number;
      readonly maxRows: number;
      /** As configured (DuckDB's `memory_limit` takes it as it is), and in bytes (the worker's OS ceiling is computed from it). */
      readonly memoryLimit: string;
      readonly memoryLimitBytes: number;
      readonly threads: number;
      readonly maxConcurrentPerOrg: number;
      /** Interactive queries this process runs at once, each in a worker process of its own. */
      readonly workers: number;
      readonly maxResultSize: string;
      readonly maxResultBytes: number;
      readonly batch: { readonly timeoutMs: number; readonly memoryLimit: string; readonly memoryLimitBytes: number; readonly maxConcurrentPerOrg: number; readonly workers: number };
    },
    readonly storage: {
      readonly kind: 'local' | 's3';
      /** local: the directory holding the object keys. */
      readonly dir: string;
      readonly bucket?: string;
      /** Where operators write files before they are put into the store. */
      readonly scratchDir: string;
    },
    readonly logLevel: LogLevel,
    readonly lifecycle: {
      readonly heartbeatIntervalMs: number;
      readonly nodeExpiryMs: number;
      readonly shutdownTimeoutMs: number;
      /** How long the system database may stay unreachable before the process exits 1; 0: never (ADR 0021). */
      readonly databaseLostExitMs: number;
    },
  ) {}

  hasRole(role: Role): boolean {
    return this.roles.includes(role);
  }
}

export class ConfigValidationError extends Error {
  constructor(readonly violations: string[]) {
    super(`Invalid configuration:\n${violations.map((v) => `  - ${v}`).join('\n')}`);
    this.name = 'ConfigValidationError';
  }
}

/** Settings whose values never appear in errors or logs. */
const SENSITIVE = new Set(['DATABASE_URL', 'TRACE_DEV_TOKEN', 'TRACE_SECRETS_KEY', 'TRACE_INTERNAL_TOKEN']);

function flatten(errors: ValidationError[]): string[] {
  return errors.map((e) => {
    const got = SENSITIVE.has(e.property) ? '' : ` (got ${JSON.stringify(e.value)})`;
    return `${e.property}: ${Object.values(e.constraints ?? {}).join('; ')}${got}`;
  });
}

/**
 * Reads config/default.env, overlays the environment (and the `--role` flag, which wins over
 * TRACE_ROLES), validates everything at once and returns the typed config. Every violation is
 * listed in the thrown ConfigValidationError.
 */
export function loadTraceConfig(overrides: { roles?: string } = {}, env: NodeJS.ProcessEnv = process.env): TraceConfig {
  const defaults = parseEnvFile(readFileSync(join(projectRoot(), 'config', 'default.env')));
  const known = Object.keys(defaults);
  const merged: Record<string, string | undefined> = { ...defaults };
  for (const key of known) {
    if (env[key] !== undefined) merged[key] = env[key];
  }
  if (overrides.roles !== undefined) merged.TRACE_ROLES = overrides.roles;

  const raw = plainToInstance(TraceEnv, merged);
  const violations = flatten(validateSync(raw, { forbidUnknownValues: true, stopAtFirstError: true }));

  let roles: Role[] = [];
  try {
    roles = parseRoles(raw.TRACE_ROLES ?? '');
  } catch (err) {
    violations.push(`TRACE_ROLES: ${(err as Error).message}`);
  }
  if (violations.length === 0 && raw.TRACE_NODE_EXPIRY_MS < 2 * raw.TRACE_HEARTBEAT_INTERVAL_MS) {
    violations.push('TRACE_NODE_EXPIRY_MS: must be at least twice TRACE_HEARTBEAT_INTERVAL_MS, or live nodes would be reaped');
  }
  if (roles.includes(Role.Wrapper) && !roles.includes(Role.Dispatcher) && !raw.TRACE_DISPATCHER_URL) {
    violations.push('TRACE_DISPATCHER_URL: is required when this process runs the wrapper role without the dispatcher role');
  }
  if (violations.length > 0) throw new ConfigValidationError(violations);

  const dataDir = isAbsolute(raw.TRACE_DATA_DIR) ? raw.TRACE_DATA_DIR : resolve(raw.TRACE_DATA_DIR);
  const allInOne = roles.length === Object.values(Role).length;
  const devOrg =
    raw.TRACE_BOOTSTRAP_DEV_ORG === 'auto'
      ? allInOne
      : raw.TRACE_BOOTSTRAP_DEV_ORG === 'true' && roles.includes(Role.Registry);

  return new TraceConfig(
    roles,
    { host: raw.HOST, port: raw.PORT },
    { url: raw.DATABASE_URL, poolSize: raw.DATABASE_POOL_SIZE, runMigrations: raw.TRACE_RUN_MIGRATIONS },
    dataDir,
    { osUser: raw.TRACE_EMBEDDED_PG_OS_USER },
    { devOrg, devToken: raw.TRACE_DEV_TOKEN },
    raw.TRACE_SECRETS_KEY ? Buffer.from(raw.TRACE_SECRETS_KEY, 'base64') : undefined,
    {
      internalToken: raw.TRACE_INTERNAL_TOKEN,
      dispatcherUrl: raw.TRACE_DISPATCHER_URL?.replace(/\/$/, ''),
      transport: raw.TRACE_DISPATCH_TRANSPORT,
      sqs: raw.TRACE_SQS_QUEUE_URL ? { queueUrl: raw.TRACE_SQS_QUEUE_URL } : undefined,
      aws: { region: raw.TRACE_AWS_REGION, endpoint: raw.TRACE_AWS_ENDPOINT },
      pollMs: raw.TRACE_DISPATCH_POLL_MS,
      reaperIntervalMs: raw.TRACE_REAPER_INTERVAL_MS,
      wrapperConcurrency: raw.TRACE_WRAPPER_CONCURRENCY,
      sandbox: sandboxConfigOf(raw),
      lambda: { invoker: raw.TRACE_LAMBDA_INVOKER, functionName: raw.TRACE_LAMBDA_FUNCTION },
      codeRoot: resolve(raw.TRACE_CODE_ROOT),
    },
    {
      timeoutMs: raw.TRACE_QUERY_TIMEOUT_MS,
      maxRows: raw.TRACE_QUERY_MAX_ROWS,
      memoryLimit: raw.TRACE_QUERY_MEMORY_LIMIT,
      memoryLimitBytes: sizeInBytes(raw.TRACE_QUERY_MEMORY_LIMIT),
      threads: raw.TRACE_QUERY_THREADS,
      maxConcurrentPerOrg: raw.TRACE_QUERY_MAX_CONCURRENT_PER_ORG,
      workers: raw.TRACE_QUERY_WORKERS,
      maxResultSize: raw.TRACE_QUERY_MAX_RESULT_SIZE,
      maxResultBytes: sizeInBytes(raw.TRACE_QUERY_MAX_RESULT_SIZE),
      batch: {
        timeoutMs: raw.TRACE_QUERY_BATCH_TIMEOUT_MS,
        memoryLimit: raw.TRACE_QUERY_BATCH_MEMORY_LIMIT,
        memoryLimitBytes: sizeInBytes(raw.TRACE_QUERY_BATCH_MEMORY_LIMIT),
        maxConcurrentPerOrg: raw.TRACE_QUERY_BATCH_MAX_CONCURRENT_PER_ORG,
        workers: raw.TRACE_QUERY_BATCH_WORKERS,
      },
    },
    {
      kind: raw.TRACE_OBJECT_STORE,
      dir: raw.TRACE_OBJECT_STORE_DIR ? resolve(raw.TRACE_OBJECT_STORE_DIR) : join(dataDir, 'objects'),
      bucket: raw.TRACE_S3_BUCKET,
      scratchDir: raw.TRACE_SCRATCH_DIR ? resolve(raw.TRACE_SCRATCH_DIR) : join(dataDir, 'scratch'),
    },
    raw.LOG_LEVEL,
    {
      heartbeatIntervalMs: raw.TRACE_HEARTBEAT_INTERVAL_MS,
      nodeExpiryMs: raw.TRACE_NODE_EXPIRY_MS,
      shutdownTimeoutMs: raw.TRACE_SHUTDOWN_TIMEOUT_MS,
      databaseLostExitMs: raw.TRACE_DATABASE_LOST_EXIT_MS,
    },
  );
}

/** What the wrapper's Lambda handler needs, read from the function's environment (set by the platform). */
export function loadLambdaWrapperConfig(env: NodeJS.ProcessEnv = process.env): { dispatcherUrl: string; codeRoot: string; sandbox: SandboxConfig; hiddenPaths: string[] } {
  const dispatcherUrl = env.TRACE_DISPATCHER_URL;
  if (!dispatcherUrl || !/^https?:\/\/\S+$/.test(dispatcherUrl)) throw new ConfigValidationError(['TRACE_DISPATCHER_URL: is required by the Lambda handler and must be an http(s) URL']);
  const defaults = parseEnvFile(readFileSync(join(projectRoot(), 'config', 'default.env')));
  const merged: Record<string, string | undefined> = {};
  for (const key of SANDBOX_ENV_KEYS) merged[key] = env[key] ?? defaults[key];
  const raw = plainToInstance(SandboxEnv, merged);
  const violations = flatten(validateSync(raw, { forbidUnknownValues: true, stopAtFirstError: true }));
  if (violations.length > 0) throw new ConfigValidationError(violations);
  // The local invoker runs the handler beside the platform: it names the directories user code must not see.
  const hiddenPaths = (env.TRACE_SANDBOX_HIDDEN_PATHS ?? '').split(':').filter((p) => isAbsolute(p));
  return { dispatcherUrl: dispatcherUrl.replace(/\/$/, ''), codeRoot: resolve(env.TRACE_CODE_ROOT ?? '.'), sandbox: sandboxConfigOf(raw), hiddenPaths };
}
