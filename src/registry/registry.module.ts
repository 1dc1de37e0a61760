import { Module } from '@nestjs/common';
import { DevOrgBootstrap } from './identity/dev-org.bootstrap';
import { IdentityController } from './identity/identity.controller';
import { IdentityService } from './identity/identity.service';

/** The `registry` role: identity now; DAG specs, deploys and the dataset registry build on it. */
@Module({
  controllers: [IdentityController],
  providers: [IdentityService, DevOrgBootstrap],
  exports: [IdentityService],
})
export class RegistryModule {}
