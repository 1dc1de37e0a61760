import { RestartBudget } from './embedded-postgres';

describe('RestartBudget', () => {
  it('allows `limit` restarts within the window and refuses the next', () => {
    const budget = new RestartBudget(3, 60_000);
    expect([0, 1_000, 2_000].map((t) => budget.take(t))).toEqual([true, true, true]);
    expect(budget.take(3_000)).toBe(false);
  });

  it('forgets restarts older than the window, and refusals are not counted', () => {
    const budget = new RestartBudget(2, 60_000);
    expect(budget.take(0)).toBe(true);
    expect(budget.take(30_000)).toBe(true);
    expect(budget.take(59_999)).toBe(false);
    expect(budget.take(60_000)).toBe(true); // the one at 0 has left the window
    expect(budget.take(89_999)).toBe(false);
    expect(budget.take(90_000)).toBe(true);
  });
});
