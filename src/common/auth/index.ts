export * from './auth.decorators';
export { AuthGuard } from './auth.guard';
export { TokenAuthService } from './token-auth.service';
