import { validateEmittedEvents } from './event-validation';

describe('validateEmittedEvents', () => {
  it('refuses NUL characters, which Postgres text and JSON cannot hold, naming the field', () => {
    const { violations } = validateEmittedEvents([
      { kind: 'data', partition_key: 'a\u0000b' },
      { kind: 'data', partition_key: 'p', payload: { environ: 'HOME=/tmp\u0000PATH=/bin' } },
      { kind: 'data', partition_key: 'p', payload: { ['k\u0000']: 1 } },
    ]);
    expect(violations.map((v) => v.field)).toEqual(['events[0].partition_key', 'events[1].payload', 'events[2].payload']);
  });

  it('accepts the text \\u0000 written out, and ordinary payloads', () => {
    const { violations } = validateEmittedEvents([{ kind: 'data', partition_key: 'p', payload: { text: 'a literal \\u0000 and \\\\u0000' } }]);
    expect(violations).toEqual([]);
  });
});
