/**
 * Remembers, for one page session, the transports that failed where a later one
 * worked (a proxy that breaks WebSocket, a buffering proxy). One that keeps failing
 * (twice in a row) is not tried first until its time is up; each failure doubles that
 * time, and once it has passed the better transport is tried first again. A single
 * failure is not enough: a gateway restarting between two attempts of one round makes
 * a good transport fail once.
 */
import type { StorageLike, TransportName } from './types.js';

const MAX_ASIDE_MS = 30 * 60_000;
/** Failures in a row before a transport stops being tried first. */
const KEEPS_FAILING = 2;

interface Record_ {
  failures: number;
  /** Worth trying first again from this time (ms). */
  until: number;
}

/** Where there is no sessionStorage: one memory for every client of the process. */
const memoryStore = new Map<string, string>();
const fallbackStorage: StorageLike = {
  getItem: (key) => memoryStore.get(key) ?? null,
  setItem: (key, value) => void memoryStore.set(key, value),
};

/** A memory of one client's own (`storage: null`). */
export function privateStorage(): StorageLike {
  const map = new Map<string, string>();
  return { getItem: (key) => map.get(key) ?? null, setItem: (key, value) => void map.set(key, value) };
}

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

  /** `preferred`, with the transports that keep failing moved to the end. */
  order(preferred: readonly TransportName[], now = Date.now()): TransportName[] {
    const records = this.read();
    const aside = (name: TransportName) => {
      const r = records[name];
      return !!r && r.failures >= KEEPS_FAILING && r.until > now;
    };
    return [...preferred.filter((n) => !aside(n)), ...preferred.filter(aside)];
  }

  /** When a transport that failed is worth trying first again (ms), or null when it has not failed. */
  retryAt(name: TransportName): number | null {
    return this.read()[name]?.until ?? null;
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
