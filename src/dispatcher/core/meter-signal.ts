import { Injectable } from '@nestjs/common';

export interface JobKey {
  dag_id: string;
  job_name: string;
}

/**
 * Wake-ups for metering (docs/architecture/contracts.md, "Wake-ups"). A process that meters
 * (the dispatcher role) attaches its metering loop here; the changes it makes itself — events
 * and completions arriving on /internal/* — then wake that loop directly once they commit,
 * naming the jobs that have new work or room. Without an attached meter (the registry role on
 * its own), the statements send `NOTIFY trace_tasks` instead, which every dispatcher hears.
 *
 * Why not always NOTIFY: Postgres serializes the commits of all transactions that sent a
 * NOTIFY, WAL flush included, so a NOTIFY on every completion and every event batch put
 * the whole task path behind one lock (docs/benchmarks.md).
 */
/** A row of trace_meter_jobs: a task it started, or a job it left to the metering loop (`handled` false). */
export interface MeteredRow {
  dag_id: string;
  job_name: string;
  task_id: string | null;
  handled: boolean;
}

@Injectable()
export class MeterSignal {
  private meter?: (jobs: JobKey[]) => void;
  private onStarted?: () => void;

  /** `meter` wakes the metering loop for jobs; `started` is told that attempts were started elsewhere (for waiting claims). */
  attach(meter: (jobs: JobKey[]) => void, started: () => void): void {
    this.meter = meter;
    this.onStarted = started;
  }

  /** True when this process meters: statements skip their NOTIFY and callers wake() after commit. */
  get inProcess(): boolean {
    return this.meter !== undefined;
  }

  wake(jobs: JobKey[]): void {
    if (jobs.length) this.meter?.(jobs);
  }

  /**
   * After a committed statement that metered its jobs in place (trace_meter_jobs): waiting claims
   * look again if it started more tasks than it claimed itself for a waiting claim (`claimed`),
   * and the loop takes the jobs it did not handle.
   */
  metered(rows: MeteredRow[], claimed = 0): void {
    if (rows.filter((r) => r.task_id).length > claimed) this.onStarted?.();
    this.wake(rows.filter((r) => !r.handled).map(({ dag_id, job_name }) => ({ dag_id, job_name })));
  }
}
