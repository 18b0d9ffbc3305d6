/**
 * SDK clients for the tests, on Node's `ws` and `eventsource` (no storage), recording
 * every state change and error; `closeAll()` closes what a test left open.
 */
import WebSocket from 'ws';
import { EventSource } from 'eventsource';
import { connect, type Client, type ConnectOptions, type StateChange } from '../../lib/client/index.js';

export interface Watched {
  client: Client;
  states: StateChange[];
  errors: Error[];
}

export function sdkClients(): { watch(options: Partial<ConnectOptions> & { url: string }): Watched; closeAll(): void } {
  const open: Client[] = [];
  return {
    watch(options) {
      const c = connect({ WebSocket, EventSource, storage: null, ...options } as ConnectOptions);
      open.push(c);
      const states: StateChange[] = [];
      const errors: Error[] = [];
      c.on('state', (s) => states.push(s));
      c.on('error', (e) => errors.push(e));
      return { client: c, states, errors };
    },
    closeAll() {
      for (const c of open.splice(0)) c.close();
    },
  };
}
