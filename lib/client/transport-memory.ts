/**
 * Remembers, for one page session, the transports that failed where a later one
 * worked (a proxy that breaks WebSocket, a buffering proxy), so they are not tried
 * first on every connection; each failure keeps one aside twice as long, and once that
 * time has passed the better transport is tried first again.
 */
import type { StorageLike, TransportName } from './types.js';

const MAX_ASIDE_MS = 30 * 60_000;

interface Record_ {
  failures: number;
  /** Not tried first before this time (ms). */
  until: number;
}

/** Where there is no sessionStorage: one memory for every client of the process. */
const memoryStore = new Map<string, string>();
const fallbackStorage: StorageLike = {
  getItem: (key) => memoryStore.get(key) ?? null,
  setItem: (key, value) => void memoryStore.set(key, value),
};

export function defaultStorage(): StorageLike {
  try {
    const s = (globalThis as { sessionStorage?: StorageLike }).sessionStorage;
    if (s) {
      const probe = 'streamgate.probe';
      s.setItem(probe, '1');
      return s;
    }
  } catch {
    // Storage disabled (privacy mode, sandboxed frame): memory will do.
  }
  return fallbackStorage;
}

export class TransportMemory {
  constructor(
    private readonly storage: StorageLike,
    private readonly key: string,
    private readonly retryBetterMs: number,
  ) {}

  /** `preferred`, with the transports currently set aside moved to the end. */
  order(preferred: readonly TransportName[], now = Date.now()): TransportName[] {
    const records = this.read();
    const aside = (name: TransportName) => (records[name]?.until ?? 0) > now;
    return [...preferred.filter((n) => !aside(n)), ...preferred.filter(aside)];
  }

  /** When the transport may be tried first again (ms), or 0 when it may now. */
  asideUntil(name: TransportName, now = Date.now()): number {
    const until = this.read()[name]?.until ?? 0;
    return until > now ? until : 0;
  }

  failed(name: TransportName, now = Date.now()): void {
    const records = this.read();
    const failures = (records[name]?.failures ?? 0) + 1;
    records[name] = { failures, until: now + Math.min(MAX_ASIDE_MS, this.retryBetterMs * 2 ** Math.min(failures - 1, 16)) };
    this.write(records);
  }

  succeeded(name: TransportName): void {
    const records = this.read();
    if (!records[name]) return;
    delete records[name];
    this.write(records);
  }

  private read(): Partial<Record<TransportName, Record_>> {
    try {
      const raw = this.storage.getItem(this.key);
      const parsed: unknown = raw ? JSON.parse(raw) : null;
      return parsed && typeof parsed === 'object' ? (parsed as Partial<Record<TransportName, Record_>>) : {};
    } catch {
      return {};
    }
  }

  private write(records: Partial<Record<TransportName, Record_>>): void {
    try {
      this.storage.setItem(this.key, JSON.stringify(records));
    } catch {
      // Storage full or disabled: the memory is an optimisation only.
    }
  }
}
