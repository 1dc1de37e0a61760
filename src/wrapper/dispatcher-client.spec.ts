import { DispatcherCallError, untilAnswered } from './dispatcher-client';

describe('untilAnswered', () => {
  it('asks again after no answer or a 5xx, and returns the answer', async () => {
    const failures: unknown[] = [new Error('ECONNREFUSED'), new DispatcherCallError(503, 'unavailable', 'restarting'), new DispatcherCallError(500, 'internal_error', 'boom')];
    let calls = 0;
    const answer = await untilAnswered(async () => {
      calls++;
      if (failures.length) throw failures.shift();
      return 'accepted';
    });
    expect([answer, calls]).toEqual(['accepted', 4]);
  });

  it('takes a 4xx as the answer: a refusal is not retried', async () => {
    let calls = 0;
    await expect(
      untilAnswered(async () => {
        calls++;
        throw new DispatcherCallError(409, 'stale_attempt', 'not the running attempt');
      }),
    ).rejects.toThrow('not the running attempt');
    expect(calls).toBe(1);
  });

  it('gives up once its time is spent, with the last failure', async () => {
    let calls = 0;
    await expect(
      untilAnswered(async () => {
        calls++;
        throw new DispatcherCallError(503, 'unavailable', `still down (${calls})`);
      }, 250),
    ).rejects.toThrow(/still down/);
    expect(calls).toBeGreaterThan(1);
  });
});
