import { cryoIngest } from './cryo/cryo-ingest';
import type { BuiltinOperator } from './operator';
import { rangeAggregator } from './ranges/range-aggregator';
import { rangeSplitter } from './ranges/range-splitter';
import { sqlOperator } from './sql/sql-operator';

/** The built-in operators this build runs (the DAG validator knows their names and configs). */
export const BUILTIN_OPERATORS: Readonly<Record<string, BuiltinOperator>> = {
  cryo_ingest: cryoIngest,
  sql: sqlOperator,
  range_aggregator: rangeAggregator,
  range_splitter: rangeSplitter,
};
