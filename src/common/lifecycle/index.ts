export { BackgroundLoops, type LoopDefinition } from './background-loops';
export { DatabaseWatchdog } from './database-watchdog';
export { NodeRegistry } from './node-registry';
