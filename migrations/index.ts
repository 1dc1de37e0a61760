import { Identity1764090000000 } from './1764090000000-Identity';
import { DagsAndDatasets1764100000000 } from './1764100000000-DagsAndDatasets';
import { EventsAndTasks1764110000000 } from './1764110000000-EventsAndTasks';
import { QueuedTaskOrder1764120000000 } from './1764120000000-QueuedTaskOrder';
import { OperatorState1764130000000 } from './1764130000000-OperatorState';
import { QueryRuns1764140000000 } from './1764140000000-QueryRuns';
import { LeanTaskPath1764150000000 } from './1764150000000-LeanTaskPath';
import { MeterInStatement1764160000000 } from './1764160000000-MeterInStatement';
import { ClaimInStatement1764170000000 } from './1764170000000-ClaimInStatement';
import { MeterWithoutQueueing1764180000000 } from './1764180000000-MeterWithoutQueueing';
import { QueueHeads1764190000000 } from './1764190000000-QueueHeads';
import { AttemptTokensNameTheirAttempt1764200000000 } from './1764200000000-AttemptTokensNameTheirAttempt';
import { WalFlush1764210000000 } from './1764210000000-WalFlush';

/** Every migration, oldest first. Listed explicitly so src (tests) and dist (the binary) load the same set. */
export const MIGRATIONS = [Identity1764090000000, DagsAndDatasets1764100000000, EventsAndTasks1764110000000, QueuedTaskOrder1764120000000, OperatorState1764130000000, QueryRuns1764140000000, LeanTaskPath1764150000000, MeterInStatement1764160000000, ClaimInStatement1764170000000, MeterWithoutQueueing1764180000000, QueueHeads1764190000000, AttemptTokensNameTheirAttempt1764200000000, WalFlush1764210000000];
