import { call } from './http';
import { waitFor } from './wait-for';

const FINAL = ['succeeded', 'failed', 'canceled'];

/** Waits until the task has finished (any final status) and returns it with attempts and events. */
export function taskFinished(baseUrl: string, token: string, taskId: string, timeoutMs = 60_000): Promise<any> {
  return waitFor(async () => {
    const t = (await call(baseUrl, 'GET', `/v1/tasks/${taskId}`, { token })).body;
    return FINAL.includes(t.status) ? t : undefined;
  }, `task ${taskId} to finish`, timeoutMs);
}

/** Waits until a job has exactly `count` tasks and all of them succeeded; returns them. */
export function jobTasksSucceeded(baseUrl: string, token: string, dag: string, job: string, count: number, timeoutMs = 60_000): Promise<{ id: string; status: string; event_id: string }[]> {
  return waitFor(async () => {
    const list = (await call(baseUrl, 'GET', `/v1/tasks?dag=${dag}&job=${job}&limit=1000`, { token })).body as { id: string; status: string; event_id: string }[];
    return list.length === count && list.every((t) => t.status === 'succeeded') ? list : undefined;
  }, `${count} ${dag}.${job} tasks to succeed`, timeoutMs);
}
