import type { DuckDBConnection } from '@duckdb/node-api';
import { badRequest } from '../common/errors';

/**
 * What a user's SQL may be, checked on DuckDB's own parse tree (`json_serialize_sql`, which
 * parses without binding or running anything): one SELECT statement, no table functions (they
 * read files and URLs: `read_csv`, `read_parquet`, `duckdb_secrets`, …), and only unqualified
 * table names — the caller's dataset views, or the query's own CTEs. Returns the dataset names
 * the query reads. docs/architecture/query_service.md lists what is refused and why.
 */
export async function gateSql(parser: DuckDBConnection, sql: string): Promise<string[]> {
  const result = await parser.runAndReadAll('SELECT json_serialize_sql($1::VARCHAR) AS tree', [sql]);
  const tree = JSON.parse(String(result.getRowObjectsJS()[0]!.tree)) as { error: boolean; error_message?: string; error_type?: string; statements?: unknown[] };
  if (tree.error) {
    const message = tree.error_message ?? 'cannot parse the SQL';
    if (/Only SELECT statements/.test(message)) throw badRequest('statement_not_allowed', 'only a SELECT statement can be run (no COPY, ATTACH, INSTALL, LOAD, SET, PRAGMA, CREATE, INSERT, …)');
    throw badRequest('invalid_sql', message);
  }
  if ((tree.statements ?? []).length !== 1) throw badRequest('statement_not_allowed', `exactly one statement per query, got ${(tree.statements ?? []).length}`);
  const tables = new Set<string>();
  const ctes = new Set<string>();
  const visit = (node: unknown): void => {
    if (Array.isArray(node)) return node.forEach(visit);
    if (!node || typeof node !== 'object') return;
    const n = node as Record<string, unknown>;
    if (n.type === 'TABLE_FUNCTION') {
      const fn = (n.function as { function_name?: string } | undefined)?.function_name ?? 'a table function';
      throw badRequest('function_not_allowed', `table function ${fn}() is not allowed: queries read datasets by name (SELECT … FROM dataset_name)`);
    }
    if (n.type === 'BASE_TABLE') {
      if (n.schema_name || n.catalog_name) throw badRequest('name_not_allowed', `"${[n.catalog_name, n.schema_name, n.table_name].filter(Boolean).join('.')}": refer to datasets by their name alone`);
      tables.add(String(n.table_name));
    }
    const cteMap = (n.cte_map as { map?: { key: string }[] } | undefined)?.map;
    for (const entry of cteMap ?? []) ctes.add(entry.key);
    for (const value of Object.values(n)) visit(value);
  };
  visit(tree.statements);
  return [...tables].filter((t) => !ctes.has(t)).sort();
}
