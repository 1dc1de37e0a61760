export declare const sleep: (ms: number) => Promise<void>;
export declare const median: (xs: number[]) => number;
export declare function freePort(): Promise<number>;
