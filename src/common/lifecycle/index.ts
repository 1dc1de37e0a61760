export { BackgroundLoops, type LoopDefinition } from './background-loops';
export { NodeRegistry } from './node-registry';
