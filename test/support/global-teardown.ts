import type { EmbeddedPostgres } from '../../src/common/db/embedded-postgres';

export default async function globalTeardown(): Promise<void> {
  await (globalThis as { __tracePg?: EmbeddedPostgres }).__tracePg?.stop();
}
