export declare const sleep: (ms: number) => Promise<void>;
export declare const median: (xs: number[]) => number;
export declare function freePort(): Promise<number>;
export declare function cpuMsOf(names: string[]): number;
export declare function cpuMsOfPid(pid: number): number;
