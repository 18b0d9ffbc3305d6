// The parts of sse-channel 4 that Streamgate uses (the package ships no types).
declare module 'sse-channel' {
  import type { IncomingMessage, ServerResponse } from 'node:http';

  interface SseChannelOptions {
    historySize?: number;
    retryTimeout?: number;
    pingInterval?: number;
    jsonEncode?: boolean;
  }

  interface SseMessage {
    id?: string;
    event?: string;
    data: string;
    retry?: number;
  }

  class SseChannel {
    constructor(options?: SseChannelOptions);
    addClient(req: IncomingMessage, res: ServerResponse, callback?: (err?: Error) => void): void;
    removeClient(res: ServerResponse): void;
    getConnectionCount(): number;
    send(message: SseMessage | string, clients?: ServerResponse[]): void;
    close(): void;
  }

  export = SseChannel;
}
