/**
 * The built-in operators that pass files on without rewriting them: their output events name
 * files of the datasets they consume (range_aggregator without `compact`, range_splitter always).
 */
export const PASS_THROUGH_OPERATORS = ['range_aggregator', 'range_splitter'];

/** How many pass-through hops the lineage follows (an aggregator over an aggregator over …); enough for any real chain, and a bound on the walk. */
export const LINEAGE_MAX_DEPTH = 8;

/**
 * The dataset version locations an attempt of task $1 (org $2) may read files from, for
 * GET /internal/input-locations (src/operators/input-files.ts says why operators ask). $3: the
 * pass-through operators, $4: the depth bound.
 *
 * - depth 0: the input event's own dataset.
 * - depth 1: when the job that emitted the event (its producer task, in the DAG version that task
 *   ran) is a pass-through built-in, the datasets that job consumes (`dataset_consumers`): the
 *   files its events name are theirs.
 * - depth n + 1: for a dataset reached at depth n ≥ 1, the datasets consumed by each pass-through
 *   job that writes it (its own job, or a `writes_to` writer) in its DAG's active version.
 *
 * An edge in `dataset_consumers` exists only for an input its DAG was allowed to read at deploy
 * (same org, the read rule), so the walk never leaves what the chain may read; the answer is
 * still cut to the task's org and to file-backed versions that are not purged. Each hop's
 * operator checked its own input keys against the same rule, so a key that reached this event
 * through pass-through jobs lies in one of these locations.
 */
export const INPUT_LOCATIONS_SQL = `
  WITH RECURSIVE
    input AS (
      SELECT e.dataset_uuid, p.dag_id, p.job_name, p.dag_version_id
        FROM tasks t
        JOIN events e ON e.id = t.event_id
        JOIN tasks p ON p.id = e.producer_task_id
       WHERE t.id = $1
    ),
    lineage (dataset_uuid, depth) AS (
      SELECT dataset_uuid, 0 FROM input
      UNION
      SELECT c.dataset_uuid, 1
        FROM input i
        JOIN dag_versions v ON v.id = i.dag_version_id
        JOIN dataset_consumers c ON c.dag_id = i.dag_id AND c.job_name = i.job_name
       WHERE EXISTS (SELECT 1 FROM jsonb_array_elements(v.spec->'jobs') j WHERE j->>'name' = i.job_name AND j->>'operator' = ANY ($3::text[]))
      UNION
      SELECT c.dataset_uuid, l.depth + 1
        FROM lineage l
        JOIN datasets d ON d.dataset_uuid = l.dataset_uuid
        JOIN dags g ON g.id = d.dag_id
        JOIN dag_versions v ON v.id = g.active_version_id
        CROSS JOIN LATERAL jsonb_array_elements(v.spec->'jobs') j
        JOIN dataset_consumers c ON c.dag_id = d.dag_id AND c.job_name = j->>'name'
       WHERE l.depth >= 1 AND l.depth < $4
         AND j->>'operator' = ANY ($3::text[])
         AND (j->>'name' = d.job_name
              OR EXISTS (SELECT 1 FROM jsonb_array_elements(j->'outputs') o
                          WHERE o->'writes_to'->>'job' = d.job_name AND (o->'writes_to'->>'output')::int = d.output_index))
    )
  SELECT DISTINCT dv.location
    FROM lineage l
    JOIN datasets d ON d.dataset_uuid = l.dataset_uuid
    JOIN dataset_versions dv ON dv.dataset_uuid = d.dataset_uuid
   WHERE d.org_id = $2 AND d.backend = 's3' AND dv.status <> 'purged'
   ORDER BY dv.location`;
