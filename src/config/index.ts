export { TraceConfigModule } from './config.module';
export { ConfigValidationError, loadLambdaWrapperConfig, loadTraceConfig, TraceConfig, type LogLevel } from './trace-config';
export { ALL_ROLES, parseRoles, Role, UnknownRoleError } from './roles';
export { projectRoot } from './project-root';
export { type SandboxConfig, sandboxEnvOf } from './sandbox-env';
