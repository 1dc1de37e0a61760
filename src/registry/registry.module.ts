import { Module } from '@nestjs/common';
import { StorageModule } from '../common/storage';
import { DispatcherCoreModule } from '../dispatcher/core/dispatcher-core.module';
import { DagDeployService } from './dags/dag-deploy.service';
import { DagsController } from './dags/dags.controller';
import { DagsService } from './dags/dags.service';
import { DatasetsController } from './datasets/datasets.controller';
import { DatasetsService } from './datasets/datasets.service';
import { DevOrgBootstrap } from './identity/dev-org.bootstrap';
import { IdentityController } from './identity/identity.controller';
import { IdentityService } from './identity/identity.service';
import { SecretsController } from './secrets/secrets.controller';
import { SecretsService } from './secrets/secrets.service';
import { TasksController } from './tasks.controller';

/** The `registry` role: identity, DAG specs and deploys, the dataset registry and its ACLs, secrets, the task API. */
@Module({
  imports: [DispatcherCoreModule, StorageModule],
  controllers: [IdentityController, DagsController, DatasetsController, SecretsController, TasksController],
  providers: [IdentityService, DevOrgBootstrap, DagDeployService, DagsService, DatasetsService, SecretsService],
  exports: [IdentityService, DatasetsService],
})
export class RegistryModule {}
