import { Injectable } from '@nestjs/common';
import { TraceConfig } from '../../config';

/**
 * Where this process's dispatcher answers /internal/*: TRACE_DISPATCHER_URL when set, otherwise
 * this process itself, known once the HTTP server listens (main.ts sets it).
 */
@Injectable()
export class SelfUrl {
  private url?: string;

  constructor(private readonly config: TraceConfig) {}

  set(listeningOn: string): void {
    this.url = listeningOn;
  }

  /** Undefined until the server listens (and no TRACE_DISPATCHER_URL is configured). */
  dispatcher(): string | undefined {
    return this.config.dispatch.dispatcherUrl ?? this.url;
  }
}
