export * from './entities';
export * from './tokens';
export * from './principal';
