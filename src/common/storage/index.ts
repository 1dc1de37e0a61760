export { assertKey, LocalObjectStore, S3ObjectStore, type ObjectStore } from './object-store';
export { createObjectStore, OBJECT_STORE, StorageModule } from './storage.module';
