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
@Injectable()
export class MeterSignal {
  private meter?: (jobs: JobKey[]) => void;

  attach(meter: (jobs: JobKey[]) => void): void {
    this.meter = meter;
  }

  /** True when this process meters: statements skip their NOTIFY and callers wake() after commit. */
  get inProcess(): boolean {
    return this.meter !== undefined;
  }

  wake(jobs: JobKey[]): void {
    if (jobs.length) this.meter?.(jobs);
  }
}
