/**
 * A frame encoded once and shared by every subscriber: the text for SSE and polling,
 * and, made on first use, its UTF-8 bytes and the whole WebSocket frame around them.
 * A server's frames are never masked (RFC 6455 §5.1) and ours never compressed, so
 * that frame is the same bytes for every socket: each delivery is one write.
 */
export class SharedFrame {
  private encoded: Buffer | undefined;
  private framed: Buffer | undefined;

  constructor(readonly text: string) {}

  get bytes(): Buffer {
    return (this.encoded ??= Buffer.from(this.text));
  }

  /** The unmasked, final WebSocket text frame (RFC 6455 §5.2) carrying `bytes`. */
  get wsFrame(): Buffer {
    return (this.framed ??= textFrame(this.bytes));
  }
}

function textFrame(payload: Buffer): Buffer {
  const n = payload.length;
  const head = n < 126 ? 2 : n < 65536 ? 4 : 10;
  const out = Buffer.allocUnsafe(head + n);
  out[0] = 0x81; // FIN + opcode 1 (text)
  if (n < 126) out[1] = n;
  else if (n < 65536) {
    out[1] = 126;
    out.writeUInt16BE(n, 2);
  } else {
    out[1] = 127;
    out.writeUInt32BE(Math.floor(n / 2 ** 32), 2);
    out.writeUInt32BE(n >>> 0, 6);
  }
  payload.copy(out, head);
  return out;
}

/** What a session writes: its own frames are plain strings, fan-out frames are shared. */
export type OutFrame = string | SharedFrame;

export function frameText(frame: OutFrame): string {
  return typeof frame === 'string' ? frame : frame.text;
}

export function frameLength(frame: OutFrame): number {
  return typeof frame === 'string' ? frame.length : frame.text.length;
}
