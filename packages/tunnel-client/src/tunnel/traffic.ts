// What a tunnel's data path counts: its own bytes (GET /list) and, as they happen, the
// process-wide counters the metrics read at collection time.

/** Process-wide counters (metrics read them at collection time). */
export interface TunnelCounters {
  reconnects: number;
  connectionsOpened: number;
  connectionsFailed: number;
  bytesIn: number;
  bytesOut: number;
}

export class Traffic {
  /** Peer to target. */
  bytesIn = 0;
  /** Target to peer. */
  bytesOut = 0;

  constructor(private readonly process: TunnelCounters) {}

  in(bytes: number): void {
    this.bytesIn += bytes;
    this.process.bytesIn += bytes;
  }

  out(bytes: number): void {
    this.bytesOut += bytes;
    this.process.bytesOut += bytes;
  }

  connectionOpened(): void {
    this.process.connectionsOpened++;
  }

  connectionFailed(): void {
    this.process.connectionsFailed++;
  }
}
