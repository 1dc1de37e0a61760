import { startSharedPostgres } from './shared-postgres';

export default async function globalSetup(): Promise<void> {
  (globalThis as { __tracePg?: unknown }).__tracePg = await startSharedPostgres();
}
