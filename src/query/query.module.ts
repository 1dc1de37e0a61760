import { Module } from '@nestjs/common';
import { StorageModule } from '../common/storage';
import { QueryController } from './query.controller';
import { QueryService } from './query.service';

/** The `query` role: the Query Service: SQL over published datasets with pinned versions. Loaded only when this process runs the role. */
@Module({ imports: [StorageModule], controllers: [QueryController], providers: [QueryService] })
export class QueryModule {}
