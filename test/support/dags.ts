import { call } from './http';
import { taskFinished } from './tasks';
import { waitFor } from './wait-for';

const FINAL = ['succeeded', 'failed', 'canceled'];

/** Triggers a source job and waits for its run to succeed (throws with its attempts otherwise). */
export async function runSource(baseUrl: string, token: string, dag: string, job: string, timeoutMs = 120_000): Promise<any> {
  const id = (await call(baseUrl, 'POST', `/v1/dags/${dag}/jobs/${job}/runs`, { token })).body.task_id;
  const t = await taskFinished(baseUrl, token, id, timeoutMs);
  if (t.status !== 'succeeded') throw new Error(`${dag}.${job} ${t.status}: ${JSON.stringify(t.attempts)}`);
  return t;
}

/** Waits until no task of the DAG is queued or running (and at least `min` exist); returns them. */
export function dagSettled(baseUrl: string, token: string, dag: string, min = 1, timeoutMs = 120_000): Promise<{ id: string; job: string; status: string; error: string | null }[]> {
  return waitFor(async () => {
    const all = (await call(baseUrl, 'GET', `/v1/tasks?dag=${dag}&limit=1000`, { token })).body as { id: string; job: string; status: string; error: string | null }[];
    return all.length >= min && all.every((t) => FINAL.includes(t.status)) ? all : undefined;
  }, `${dag} to settle`, timeoutMs);
}

/** The location of a published dataset's current version (an object-key prefix, or a Postgres table). */
export async function currentLocation(baseUrl: string, token: string, name: string): Promise<string> {
  const d = (await call(baseUrl, 'GET', `/v1/datasets/${name}`, { token })).body;
  return d.versions.find((v: { current: boolean }) => v.current).location;
}

/** Every event the tasks of one job emitted. */
export async function jobEvents(baseUrl: string, token: string, dag: string, job: string): Promise<any[]> {
  const tasks = (await call(baseUrl, 'GET', `/v1/tasks?dag=${dag}&job=${job}&limit=1000`, { token })).body as { id: string }[];
  return (await Promise.all(tasks.map(async (t) => (await call(baseUrl, 'GET', `/v1/tasks/${t.id}`, { token })).body.events))).flat();
}
