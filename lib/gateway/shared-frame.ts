/**
 * A frame encoded once and shared by every subscriber: the text for SSE and polling,
 * and its UTF-8 bytes, made on first use, for WebSocket (so `ws` does not convert the
 * same string again for each socket).
 */
export class SharedFrame {
  private encoded: Buffer | undefined;

  constructor(readonly text: string) {}

  get bytes(): Buffer {
    return (this.encoded ??= Buffer.from(this.text));
  }
}

/** What a session writes: its own frames are plain strings, fan-out frames are shared. */
export type OutFrame = string | SharedFrame;

export function frameText(frame: OutFrame): string {
  return typeof frame === 'string' ? frame : frame.text;
}

export function frameLength(frame: OutFrame): number {
  return typeof frame === 'string' ? frame.length : frame.text.length;
}
