import { Module } from '@nestjs/common';

/** The `sink` role: consumers of buffered Postgres datasets, one per dataset queue. Loaded only when this process runs the role. */
@Module({})
export class SinkModule {}
