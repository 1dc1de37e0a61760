import { Module } from '@nestjs/common';

/** The `query` role: the Query Service: SQL over published datasets with pinned versions. Loaded only when this process runs the role. */
@Module({})
export class QueryModule {}
