/**
 * A raw SSE reader over fetch for conformance tests: parses the stream into frames
 * (`event`, `id`, `data`) and comments, exactly as they come off the wire.
 */
export interface SseFrame {
  event: string;
  id?: string;
  data: any;
}

export interface SseReader {
  status: number;
  headers: Headers;
  raw: () => string;
  frames: SseFrame[];
  comments: string[];
  next(pred: (f: SseFrame) => boolean, timeoutMs?: number): Promise<SseFrame>;
  close(): void;
  ended: Promise<void>;
}

export async function openSse(url: string, headers: Record<string, string> = {}): Promise<SseReader> {
  const ctrl = new AbortController();
  const res = await fetch(url, { headers, signal: ctrl.signal });
  const frames: SseFrame[] = [];
  const comments: string[] = [];
  let raw = '';
  let buf = '';
  const waiters = new Set<() => void>();
  const parseBlock = (block: string) => {
    const lines = block.split('\n');
    const f: Partial<SseFrame> & { dataLines?: string[] } = {};
    for (const line of lines) {
      if (line.startsWith(':')) comments.push(line.slice(1));
      else if (line.startsWith('event: ')) f.event = line.slice(7);
      else if (line.startsWith('id: ')) f.id = line.slice(4);
      else if (line.startsWith('data: ')) (f.dataLines ??= []).push(line.slice(6));
    }
    if (f.dataLines) {
      const frame: SseFrame = { event: f.event ?? 'message', data: JSON.parse(f.dataLines.join('\n')) };
      if (f.id !== undefined) frame.id = f.id;
      frames.push(frame);
    }
    for (const w of [...waiters]) w();
  };
  let ended: Promise<void> = Promise.resolve();
  if (res.status === 200 && res.body) {
    const reader = res.body.getReader();
    const dec = new TextDecoder();
    ended = (async () => {
      try {
        for (;;) {
          const { done, value } = await reader.read();
          if (done) break;
          const text = dec.decode(value, { stream: true });
          raw += text;
          buf += text;
          let i;
          while ((i = buf.indexOf('\n\n')) !== -1) {
            parseBlock(buf.slice(0, i));
            buf = buf.slice(i + 2);
          }
        }
      } catch {
        // aborted
      }
      for (const w of [...waiters]) w();
    })();
  } else {
    raw = await res.text();
  }
  let isEnded = false;
  void ended.then(() => (isEnded = true));
  return {
    status: res.status,
    headers: res.headers,
    raw: () => raw,
    frames,
    comments,
    ended,
    close: () => ctrl.abort(),
    next: (pred, timeoutMs = 5000) =>
      new Promise((resolve, reject) => {
        const check = () => {
          const f = frames.find(pred);
          if (f) {
            waiters.delete(check);
            clearTimeout(timer);
            resolve(f);
          } else if (isEnded) {
            waiters.delete(check);
            clearTimeout(timer);
            reject(new Error(`stream ended; frames: ${JSON.stringify(frames.slice(-3))}`));
          }
        };
        const timer = setTimeout(() => {
          waiters.delete(check);
          reject(new Error(`timed out; frames: ${JSON.stringify(frames.slice(-3))}`));
        }, timeoutMs);
        waiters.add(check);
        check();
      }),
  };
}
