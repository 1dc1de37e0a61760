import { Module } from '@nestjs/common';
import { DagDeployService } from './dags/dag-deploy.service';
import { DagsController } from './dags/dags.controller';
import { DagsService } from './dags/dags.service';
import { DatasetsController } from './datasets/datasets.controller';
import { DatasetsService } from './datasets/datasets.service';
import { DevOrgBootstrap } from './identity/dev-org.bootstrap';
import { IdentityController } from './identity/identity.controller';
import { IdentityService } from './identity/identity.service';
import { SecretCipher } from './secrets/secret-cipher';
import { SecretsController } from './secrets/secrets.controller';
import { SecretsService } from './secrets/secrets.service';

/** The `registry` role: identity, DAG specs and deploys, the dataset registry and its ACLs, secrets. */
@Module({
  controllers: [IdentityController, DagsController, DatasetsController, SecretsController],
  providers: [IdentityService, DevOrgBootstrap, DagDeployService, DagsService, DatasetsService, SecretCipher, SecretsService],
  exports: [IdentityService, DatasetsService],
})
export class RegistryModule {}
