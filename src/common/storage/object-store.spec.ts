import { mkdtempSync, writeFileSync } from 'node:fs';
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
    expect(await store.deletePrefix('org/o/dataset/d/version/v/')).toBe(2);
    expect(await store.list('org/o/')).toEqual([]);
  });

  it('refuses keys that could leave the store', () => {
    for (const key of ['../etc/passwd', 'org/../../x', '/abs/path', 'org/./x', 'org/x y', 'org/x;rm']) expect(() => assertKey(key)).toThrow(/invalid object key/);
    expect(() => assertKey('org/1/dataset/2/version/3/0_999.parquet')).not.toThrow();
  });
});
