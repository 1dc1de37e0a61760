import { randomUUID } from 'node:crypto';
import { attemptSecrets, attemptToken, parseAttemptToken } from './attempt-token';

describe('attempt tokens', () => {
  it('name their attempt and carry a secret of which only the hash is kept', () => {
    const { secrets, hashes } = attemptSecrets(2);
    const taskId = randomUUID();
    const token = attemptToken(taskId, 7, secrets[1]!);
    expect(token).toMatch(/^tra_[A-Za-z0-9_-]{70}$/);
    expect(parseAttemptToken(token)).toEqual({ taskId, attempt: 7, hash: hashes[1] });
    expect(hashes[0]!.equals(hashes[1]!)).toBe(false);
  });

  it('refuse anything else: another prefix, length or alphabet, an old-style token', () => {
    const token = attemptToken(randomUUID(), 1, attemptSecrets(1).secrets[0]!);
    for (const bad of ['', 'tra_', token.slice(0, -1), `${token}A`, `trc_${token.slice(4)}`, `tra_${'+'.repeat(70)}`, `tra_${'A'.repeat(43)}`]) {
      expect(parseAttemptToken(bad)).toBeUndefined();
    }
  });

  it('a different secret for the same attempt hashes differently', () => {
    const taskId = randomUUID();
    const { secrets } = attemptSecrets(2);
    expect(parseAttemptToken(attemptToken(taskId, 1, secrets[0]!))!.hash.equals(parseAttemptToken(attemptToken(taskId, 1, secrets[1]!))!.hash)).toBe(false);
  });
});
