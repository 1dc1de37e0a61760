import { DeleteObjectCommand, DeleteObjectsCommand, GetObjectCommand, HeadObjectCommand, ListObjectsV2Command, PutObjectCommand, S3Client } from '@aws-sdk/client-s3';
import { chmodSync, createReadStream, mkdirSync } from 'node:fs';
import { mkdir, readdir, readFile, rename, rm, stat, writeFile } from 'node:fs/promises';
import { dirname, join, relative, sep } from 'node:path';

/**
 * Where dataset files live. Keys follow one layout on every adapter:
 * `org/{org_id}/dataset/{dataset_uuid}/version/{dataset_version}/{start}_{end}.parquet`
 * (docs/architecture/data_versioning.md). A put replaces the object whole or not at all, so a
 * reader never sees half a file and a retried write of the same range leaves one file.
 */
export interface ObjectStore {
  readonly kind: 'local' | 's3';
  /** Writes the object from a local file (the writer's scratch output). */
  putFile(key: string, path: string): Promise<void>;
  get(key: string): Promise<Buffer | undefined>;
  /** Whether the object is there, without reading it. */
  exists(key: string): Promise<boolean>;
  /** Deletes one object (nothing if it is not there). */
  delete(key: string): Promise<void>;
  /** Keys under a prefix, sorted. */
  list(prefix: string): Promise<string[]>;
  /** Deletes every object under a prefix (purge only: nothing is deleted automatically). */
  deletePrefix(prefix: string): Promise<number>;
  /** A path DuckDB can read the object from: the file itself (local) or an s3:// URL (s3). */
  readUrl(key: string): string;
}

const KEY = /^[A-Za-z0-9._\-/]+$/;

/** Keys are ours, but a key that could climb out of the store's root is refused outright. */
export function assertKey(key: string): void {
  if (!KEY.test(key) || key.split('/').some((part) => part === '..' || part === '.') || key.startsWith('/')) {
    throw new Error(`invalid object key "${key}"`);
  }
}

/**
 * A directory with the same key layout as the bucket. Writes go to a temporary name and are
 * renamed into place. Only the platform's OS user may enter it: the root is 0700 (tightened at
 * start-up if an older install left it open), new directories 0700 and files 0600, so user code
 * running as another uid reads nothing of it (docs/standards/security_model.md).
 */
export class LocalObjectStore implements ObjectStore {
  readonly kind = 'local' as const;

  constructor(readonly root: string) {
    mkdirSync(root, { recursive: true, mode: 0o700 });
    chmodSync(root, 0o700);
  }

  private path(key: string): string {
    assertKey(key);
    return join(this.root, ...key.split('/'));
  }

  async putFile(key: string, path: string): Promise<void> {
    const target = this.path(key);
    await mkdir(dirname(target), { recursive: true, mode: 0o700 });
    const scratch = `${target}.${process.pid}.${Date.now()}.tmp`;
    await writeFile(scratch, await readFile(path), { mode: 0o600 });
    await rename(scratch, target);
  }

  async get(key: string): Promise<Buffer | undefined> {
    try {
      return await readFile(this.path(key));
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
      throw err;
    }
  }

  async exists(key: string): Promise<boolean> {
    try {
      return (await stat(this.path(key))).isFile();
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') return false;
      throw err;
    }
  }

  async delete(key: string): Promise<void> {
    await rm(this.path(key), { force: true });
  }

  async list(prefix: string): Promise<string[]> {
    const dir = this.path(prefix.replace(/\/$/, ''));
    const out: string[] = [];
    const walk = async (d: string): Promise<void> => {
      let entries;
      try {
        entries = await readdir(d, { withFileTypes: true });
      } catch (err) {
        if ((err as NodeJS.ErrnoException).code === 'ENOENT') return;
        throw err;
      }
      for (const e of entries) {
        const p = join(d, e.name);
        if (e.isDirectory()) await walk(p);
        else if (!e.name.endsWith('.tmp')) out.push(relative(this.root, p).split(sep).join('/'));
      }
    };
    await walk(dir);
    return out.sort();
  }

  async deletePrefix(prefix: string): Promise<number> {
    const keys = await this.list(prefix);
    await rm(this.path(prefix.replace(/\/$/, '')), { recursive: true, force: true });
    return keys.length;
  }

  readUrl(key: string): string {
    return this.path(key);
  }
}

/** S3 (or an S3-compatible server). Objects are written with one PutObject each: atomic per object. */
export class S3ObjectStore implements ObjectStore {
  readonly kind = 's3' as const;

  constructor(
    private readonly client: S3Client,
    readonly bucket: string,
  ) {}

  async putFile(key: string, path: string): Promise<void> {
    assertKey(key);
    const { size } = await stat(path);
    await this.client.send(new PutObjectCommand({ Bucket: this.bucket, Key: key, Body: createReadStream(path), ContentLength: size }));
  }

  async get(key: string): Promise<Buffer | undefined> {
    assertKey(key);
    try {
      const res = await this.client.send(new GetObjectCommand({ Bucket: this.bucket, Key: key }));
      return Buffer.from(await res.Body!.transformToByteArray());
    } catch (err) {
      if ((err as { name?: string }).name === 'NoSuchKey') return undefined;
      throw err;
    }
  }

  async exists(key: string): Promise<boolean> {
    assertKey(key);
    try {
      await this.client.send(new HeadObjectCommand({ Bucket: this.bucket, Key: key }));
      return true;
    } catch (err) {
      const e = err as { name?: string; $metadata?: { httpStatusCode?: number } };
      if (e.name === 'NotFound' || e.name === 'NoSuchKey' || e.$metadata?.httpStatusCode === 404) return false;
      throw err;
    }
  }

  async delete(key: string): Promise<void> {
    assertKey(key);
    await this.client.send(new DeleteObjectCommand({ Bucket: this.bucket, Key: key }));
  }

  async list(prefix: string): Promise<string[]> {
    assertKey(prefix);
    const keys: string[] = [];
    let token: string | undefined;
    do {
      const res = await this.client.send(new ListObjectsV2Command({ Bucket: this.bucket, Prefix: prefix, ContinuationToken: token }));
      for (const o of res.Contents ?? []) if (o.Key) keys.push(o.Key);
      token = res.IsTruncated ? res.NextContinuationToken : undefined;
    } while (token);
    return keys.sort();
  }

  async deletePrefix(prefix: string): Promise<number> {
    const keys = await this.list(prefix);
    for (let i = 0; i < keys.length; i += 1000) {
      await this.client.send(new DeleteObjectsCommand({ Bucket: this.bucket, Delete: { Objects: keys.slice(i, i + 1000).map((Key) => ({ Key })) } }));
    }
    return keys.length;
  }

  readUrl(key: string): string {
    return `s3://${this.bucket}/${key}`;
  }
}
