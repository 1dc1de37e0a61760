import { chmodSync, mkdtempSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { assertKey, LocalObjectStore } from './object-store';

describe('LocalObjectStore', () => {
  it('puts whole files under the key layout, lists and reads them back, and deletes only by prefix', async () => {
    const root = mkdtempSync(join(tmpdir(), 'objects-'));
    const store = new LocalObjectStore(root);
    const src = join(mkdtempSync(join(tmpdir(), 'src-')), 'f.parquet');
    writeFileSync(src, 'one');
    await store.putFile('org/o/dataset/d/version/v/0_999.parquet', src);
    writeFileSync(src, 'two');
    await store.putFile('org/o/dataset/d/version/v/1000_1999.parquet', src);
    await store.putFile('org/o/dataset/d/version/v/0_999.parquet', src); // replaced whole
    expect(await store.list('org/o/dataset/d/version/v/')).toEqual(['org/o/dataset/d/version/v/0_999.parquet', 'org/o/dataset/d/version/v/1000_1999.parquet']);
    expect((await store.get('org/o/dataset/d/version/v/0_999.parquet'))!.toString()).toBe('two');
    expect(await store.get('org/o/dataset/d/version/v/5_6.parquet')).toBeUndefined();
    expect(await store.list('org/o/dataset/other/')).toEqual([]);
    expect(await store.exists('org/o/dataset/d/version/v/0_999.parquet')).toBe(true);
    expect(await store.exists('org/o/dataset/d/version/v/5_6.parquet')).toBe(false);
    await store.delete('org/o/dataset/d/version/v/0_999.parquet');
    await store.delete('org/o/dataset/d/version/v/0_999.parquet'); // nothing there: no error
    expect(await store.exists('org/o/dataset/d/version/v/0_999.parquet')).toBe(false);
    await store.putFile('org/o/dataset/d/version/v/0_999.parquet', src);
    expect(await store.deletePrefix('org/o/dataset/d/version/v/')).toBe(2);
    expect(await store.list('org/o/')).toEqual([]);
  });

  it('keeps the store to the platform user: the root and new directories 0700, files 0600, an open root tightened', async () => {
    const root = mkdtempSync(join(tmpdir(), 'objects-'));
    chmodSync(root, 0o755); // as an older install left it
    const store = new LocalObjectStore(root);
    expect(statSync(root).mode & 0o777).toBe(0o700);
    const src = join(mkdtempSync(join(tmpdir(), 'src-')), 'f.parquet');
    writeFileSync(src, 'one', { mode: 0o644 });
    await store.putFile('org/o/dataset/d/version/v/0_999.parquet', src);
    for (const dir of ['org', 'org/o', 'org/o/dataset/d', 'org/o/dataset/d/version/v']) expect(statSync(join(root, dir)).mode & 0o777).toBe(0o700);
    expect(statSync(join(root, 'org/o/dataset/d/version/v/0_999.parquet')).mode & 0o777).toBe(0o600);
  });

  it('refuses keys that could leave the store', () => {
    for (const key of ['../etc/passwd', 'org/../../x', '/abs/path', 'org/./x', 'org/x y', 'org/x;rm']) expect(() => assertKey(key)).toThrow(/invalid object key/);
    expect(() => assertKey('org/1/dataset/2/version/3/0_999.parquet')).not.toThrow();
  });
});
