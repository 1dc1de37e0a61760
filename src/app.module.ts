import { DynamicModule, Module, Type } from '@nestjs/common';
import { DatabaseModule, DatabaseTarget } from './common/db';
import { CoreModule } from './common/http/core.module';
import { JsonLogger } from './common/logging/json-logger';
import { LoggingModule } from './common/logging/logging.module';
import { Role, TraceConfig, TraceConfigModule } from './config';
import { DeliveryModule } from './delivery/delivery.module';
import { DispatcherModule } from './dispatcher/dispatcher.module';
import { QueryModule } from './query/query.module';
import { RegistryModule } from './registry/registry.module';
import { SinkModule } from './sink/sink.module';
import { WrapperModule } from './wrapper/wrapper.module';

/** The one map from role to module: a role's providers, controllers and loops load only with it. */
export const ROLE_MODULES: Record<Role, Type> = {
  [Role.Dispatcher]: DispatcherModule,
  [Role.Registry]: RegistryModule,
  [Role.Query]: QueryModule,
  [Role.Sink]: SinkModule,
  [Role.Delivery]: DeliveryModule,
  [Role.Wrapper]: WrapperModule,
};

@Module({})
export class AppModule {
  static forRoles(config: TraceConfig, logger: JsonLogger, database: DatabaseTarget): DynamicModule {
    return {
      module: AppModule,
      imports: [
        TraceConfigModule.forRoot(config),
        LoggingModule.forRoot(logger),
        DatabaseModule.forRoot(database),
        CoreModule,
        ...config.roles.map((role) => ROLE_MODULES[role]),
      ],
    };
  }
}
