import type { DuckDBConnection } from '@duckdb/node-api';

/** Why the gate refused a query; the service answers `400` with the code (docs/architecture/query_service.md#what-is-refused). */
export type SqlRefusalCode = 'invalid_sql' | 'statement_not_allowed' | 'function_not_allowed' | 'name_not_allowed';

/**
 * A refusal by the gate. A plain error, not an HTTP one: the gate runs in the query worker
 * process, which loads DuckDB and nothing of the web framework.
 */
export class SqlRefusal extends Error {
  constructor(
    readonly code: SqlRefusalCode,
    message: string,
  ) {
    super(message);
    this.name = 'SqlRefusal';
  }
}

/**
 * Scalar functions and macros that tell a caller about the server instead of the data: settings
 * (`allowed_directories`, `temp_directory`, … name server paths), the environment, and the catalog
 * definitions of the query's own views (which list the pinned files' paths). Table functions
 * (`duckdb_settings()`, `duckdb_databases()`, `pragma_*`, `which_secret()`, …) are refused as a
 * class. `src/query/sql-gate.spec.ts` checks that every built-in macro reading the catalog is here.
 */
export const REFUSED_FUNCTIONS: ReadonlySet<string> = new Set([
  'current_setting',
  'getenv',
  'json_serialize_plan', // plans (and so binds) SQL given as a string, past the gate; the plan names files
  'pg_get_viewdef', // the view's SQL names its files
  'pg_get_constraintdef',
  'format_type',
  'get_block_size',
  'which_secret',
]);

/** Names a refused function may also take: the DuckDB catalog's own families of introspection functions. */
const REFUSED_PREFIXES = ['duckdb_', 'pragma_'];

const isRefused = (name: string) => REFUSED_FUNCTIONS.has(name) || REFUSED_PREFIXES.some((p) => name.startsWith(p));

/**
 * What a user's SQL may be, checked on DuckDB's own parse tree (`json_serialize_sql`, which
 * parses without binding or running anything): one SELECT statement, no table functions (they
 * read files and URLs: `read_csv`, `read_parquet`, `duckdb_secrets`, …), no function that reveals
 * the server's configuration ({@link REFUSED_FUNCTIONS}), no catalog listing (`SHOW TABLES`,
 * `SHOW databases`), and only unqualified table names — the caller's dataset views, or the query's
 * own CTEs. Returns the dataset names the query reads; throws {@link SqlRefusal} otherwise.
 * docs/architecture/query_service.md lists what is refused and why.
 */
export async function gateSql(parser: DuckDBConnection, sql: string): Promise<string[]> {
  const result = await parser.runAndReadAll('SELECT json_serialize_sql($1::VARCHAR) AS tree', [sql]);
  const tree = JSON.parse(String(result.getRowObjectsJS()[0]!.tree)) as { error: boolean; error_message?: string; error_type?: string; statements?: unknown[] };
  if (tree.error) {
    const message = tree.error_message ?? 'cannot parse the SQL';
    if (/Only SELECT statements/.test(message)) throw new SqlRefusal('statement_not_allowed', 'only a SELECT statement can be run (no COPY, ATTACH, INSTALL, LOAD, SET, PRAGMA, CREATE, INSERT, …)');
    throw new SqlRefusal('invalid_sql', message);
  }
  if ((tree.statements ?? []).length !== 1) throw new SqlRefusal('statement_not_allowed', `exactly one statement per query, got ${(tree.statements ?? []).length}`);
  const tables = new Set<string>();
  const ctes = new Set<string>();
  const visit = (node: unknown): void => {
    if (Array.isArray(node)) return node.forEach(visit);
    if (!node || typeof node !== 'object') return;
    const n = node as Record<string, unknown>;
    if (n.type === 'TABLE_FUNCTION') {
      const fn = (n.function as { function_name?: string } | undefined)?.function_name ?? 'a table function';
      throw new SqlRefusal('function_not_allowed', `table function ${fn}() is not allowed: queries read datasets by name (SELECT … FROM dataset_name)`);
    }
    if (n.class === 'FUNCTION' && typeof n.function_name === 'string' && isRefused(n.function_name.toLowerCase())) {
      throw new SqlRefusal('function_not_allowed', `function ${n.function_name.toLowerCase()}() is not allowed: it describes the server, not your data`);
    }
    if (n.type === 'SHOW_REF' && !n.query) {
      // DESCRIBE and SUMMARIZE carry the query they describe (visited below); SHOW TABLES and SHOW databases list the catalog.
      throw new SqlRefusal('statement_not_allowed', 'SHOW lists the query engine\'s catalog, not your datasets; use DESCRIBE dataset_name');
    }
    if (n.type === 'BASE_TABLE') {
      if (n.schema_name || n.catalog_name) throw new SqlRefusal('name_not_allowed', `"${[n.catalog_name, n.schema_name, n.table_name].filter(Boolean).join('.')}": refer to datasets by their name alone`);
      tables.add(String(n.table_name));
    }
    const cteMap = (n.cte_map as { map?: { key: string }[] } | undefined)?.map;
    for (const entry of cteMap ?? []) ctes.add(entry.key);
    for (const value of Object.values(n)) visit(value);
  };
  visit(tree.statements);
  return [...tables].filter((t) => !ctes.has(t)).sort();
}
