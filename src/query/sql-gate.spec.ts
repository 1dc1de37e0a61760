import { DuckDBConnection, DuckDBInstance } from '@duckdb/node-api';
import { gateSql, REFUSED_FUNCTIONS, SqlRefusal } from './sql-gate';

describe('gateSql', () => {
  let instance: DuckDBInstance;
  let parser: DuckDBConnection;
  const refusal = async (sql: string) => {
    try {
      await gateSql(parser, sql);
    } catch (err) {
      if (err instanceof SqlRefusal) return err.code;
      throw err;
    }
    return 'allowed';
  };

  beforeAll(async () => {
    instance = await DuckDBInstance.create(':memory:');
    parser = await instance.connect();
  });
  afterAll(() => {
    parser.closeSync();
    instance.closeSync();
  });

  it('answers the dataset names a SELECT reads, without its own CTEs, in subqueries and DESCRIBE too', async () => {
    expect(await gateSql(parser, 'WITH r AS (SELECT * FROM blocks) SELECT * FROM r JOIN logs USING (block_number) WHERE x IN (SELECT x FROM labels)')).toEqual(['blocks', 'labels', 'logs']);
    expect(await gateSql(parser, 'DESCRIBE blocks')).toEqual(['blocks']);
    expect(await gateSql(parser, 'SUMMARIZE SELECT * FROM blocks')).toEqual(['blocks']);
    expect(await gateSql(parser, "SELECT version(), current_database(), upper('x'), list_transform([1], x -> x + 1)")).toEqual([]);
  });

  it('refuses what is not one SELECT, table functions, qualified names and what does not parse', async () => {
    const cases: [string, string][] = [
      ["COPY blocks TO '/tmp/x.csv'", 'statement_not_allowed'],
      ["SET memory_limit = '10GB'", 'statement_not_allowed'],
      ['PRAGMA database_list', 'statement_not_allowed'],
      ['SELECT 1; SELECT 2', 'statement_not_allowed'],
      ['SHOW TABLES', 'statement_not_allowed'],
      ['SHOW ALL TABLES', 'statement_not_allowed'],
      ['SHOW databases', 'statement_not_allowed'],
      ["SELECT * FROM read_csv('/etc/passwd')", 'function_not_allowed'],
      ['FROM duckdb_settings()', 'function_not_allowed'],
      ['SELECT * FROM duckdb_databases()', 'function_not_allowed'],
      ['SELECT * FROM pragma_database_list()', 'function_not_allowed'],
      ["SELECT * FROM which_secret('s3://x', 's3')", 'function_not_allowed'],
      ['SELECT (SELECT path FROM duckdb_databases() LIMIT 1)', 'function_not_allowed'],
      ['SELECT * FROM main.blocks', 'name_not_allowed'],
      ['SELEC nonsense', 'invalid_sql'],
    ];
    for (const [sql, code] of cases) expect({ sql, code: await refusal(sql) }).toEqual({ sql, code });
  });

  it('refuses the functions that describe the server, however they are spelled or nested', async () => {
    const probes = [
      "SELECT current_setting('allowed_directories')",
      "SELECT current_setting('temp_directory')",
      "SELECT CURRENT_SETTING('home_directory')",
      'SELECT "current_setting"(\'extension_directory\')',
      "SELECT system.main.current_setting('allowed_directories')",
      "SELECT list_transform(['temp_directory'], s -> current_setting(s))",
      "SELECT * FROM blocks WHERE x = (SELECT current_setting('threads'))",
      "SELECT getenv('HOME')",
      "SELECT json_serialize_plan('SELECT * FROM blocks')",
      'SELECT pg_get_viewdef(1)',
      'SELECT pg_get_constraintdef(1)',
      'SELECT format_type(1, 1)',
      "SELECT get_block_size('memory')",
    ];
    for (const sql of probes) expect({ sql, code: await refusal(sql) }).toEqual({ sql, code: 'function_not_allowed' });
  });

  it('refuses every built-in macro that reads the catalog, and every setting-reading function there is', async () => {
    const rows = (
      await parser.runAndReadAll(
        `SELECT DISTINCT function_name, function_type, coalesce(macro_definition, '') AS body FROM duckdb_functions() WHERE function_type IN ('macro', 'scalar')`,
      )
    ).getRowObjectsJS() as { function_name: string; function_type: string; body: string }[];
    const readsCatalog = rows.filter((r) => r.function_type === 'macro' && /\b(duckdb_\w+|pragma_\w+|which_secret)\s*\(/.test(r.body)).map((r) => r.function_name);
    const aboutSettings = rows.filter((r) => /setting|getenv|secret|serialize_plan/.test(r.function_name)).map((r) => r.function_name);
    expect(readsCatalog.length).toBeGreaterThan(0);
    for (const name of [...new Set([...readsCatalog, ...aboutSettings])]) expect({ name, refused: REFUSED_FUNCTIONS.has(name) }).toEqual({ name, refused: true });
  });
});
