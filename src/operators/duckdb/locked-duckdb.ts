import { DuckDBConnection, DuckDBInstance } from '@duckdb/node-api';

export interface DuckDbOptions {
  threads: number;
  memoryLimit: string;
  /** Directories DuckDB may read and write; nothing else on the file system, and no network. */
  allowedDirectories: string[];
}

/** SQL string literal. */
export const lit = (s: string) => `'${s.replace(/'/g, "''")}'`;

/**
 * An in-memory DuckDB, locked down before any SQL from a DAG runs in it: no extension loading or
 * installing, file access only inside the given directories, no network, and the configuration
 * locked so SQL cannot loosen it (docs/standards/security_model.md).
 */
export async function openLockedDuckDb(options: DuckDbOptions): Promise<{ conn: DuckDBConnection; close(): void }> {
  const instance = await DuckDBInstance.create(':memory:', {
    threads: String(options.threads),
    memory_limit: options.memoryLimit,
    autoload_known_extensions: 'false',
    autoinstall_known_extensions: 'false',
    allow_community_extensions: 'false',
  });
  const conn = await instance.connect();
  await conn.run(`SET allowed_directories = [${options.allowedDirectories.map((d) => lit(d.endsWith('/') ? d : `${d}/`)).join(', ')}]`);
  await conn.run(`SET enable_external_access = false`);
  await conn.run(`SET lock_configuration = true`);
  return {
    conn,
    close: () => {
      conn.closeSync();
      instance.closeSync();
    },
  };
}
