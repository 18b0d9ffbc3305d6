/** A small typed event emitter that works the same in browsers and Node. */

type Listener<T> = (value: T) => void;

export class Emitter<Events extends object> {
  private readonly listeners = new Map<keyof Events, Set<Listener<never>>>();

  /** Adds a listener; returns a function that removes it. */
  on<K extends keyof Events>(name: K, listener: Listener<Events[K]>): () => void {
    let set = this.listeners.get(name);
    if (!set) this.listeners.set(name, (set = new Set()));
    set.add(listener as Listener<never>);
    return () => this.off(name, listener);
  }

  off<K extends keyof Events>(name: K, listener: Listener<Events[K]>): void {
    this.listeners.get(name)?.delete(listener as Listener<never>);
  }

  emit<K extends keyof Events>(name: K, value: Events[K]): void {
    const set = this.listeners.get(name);
    if (!set) return;
    for (const listener of [...set]) callSafely(listener as Listener<Events[K]>, value);
  }

  listenerCount<K extends keyof Events>(name: K): number {
    return this.listeners.get(name)?.size ?? 0;
  }
}

/**
 * Calls application code. Its exceptions must not break the SDK's bookkeeping, so they
 * are rethrown on their own turn, where the page's or process's error reporting sees them.
 */
export function callSafely<T>(fn: (value: T) => void, value: T): void {
  try {
    fn(value);
  } catch (err) {
    setTimeout(() => {
      throw err;
    }, 0);
  }
}
