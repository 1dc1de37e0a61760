import { Module } from '@nestjs/common';
import { S3Client } from '@aws-sdk/client-s3';
import { TraceConfig } from '../../config';
import { LocalObjectStore, S3ObjectStore, type ObjectStore } from './object-store';

export const OBJECT_STORE = Symbol('OBJECT_STORE');

/** The object store named by the configuration: what the `s3` backend means on this deployment. */
export function createObjectStore(config: TraceConfig): ObjectStore {
  if (config.storage.kind === 'local') return new LocalObjectStore(config.storage.dir);
  const { region, endpoint } = config.dispatch.aws;
  // An endpoint override (an S3-compatible server) addresses buckets by path.
  const client = new S3Client({ region, ...(endpoint ? { endpoint, forcePathStyle: true } : {}) });
  return new S3ObjectStore(client, config.storage.bucket!);
}

@Module({
  providers: [{ provide: OBJECT_STORE, inject: [TraceConfig], useFactory: createObjectStore }],
  exports: [OBJECT_STORE],
})
export class StorageModule {}
