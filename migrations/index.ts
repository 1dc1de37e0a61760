import { Identity1764090000000 } from './1764090000000-Identity';
import { DagsAndDatasets1764100000000 } from './1764100000000-DagsAndDatasets';
import { EventsAndTasks1764110000000 } from './1764110000000-EventsAndTasks';

/** Every migration, oldest first. Listed explicitly so src (tests) and dist (the binary) load the same set. */
export const MIGRATIONS = [Identity1764090000000, DagsAndDatasets1764100000000, EventsAndTasks1764110000000];
