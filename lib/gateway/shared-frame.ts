/**
 * A frame encoded once and shared by every subscriber: the text for SSE and polling,
 * and, made on first use, the whole WebSocket frame around its UTF-8 bytes. A
 * server's frames are never masked (RFC 6455 §5.1) and ours never compressed, so that
 * frame is the same bytes for every socket: each delivery is one write.
 */
export class SharedFrame {
  private framed: Buffer | undefined;
  private head = 0;

  constructor(readonly text: string) {}

  /** The unmasked, final WebSocket text frame (RFC 6455 §5.2) carrying the text. */
  get wsFrame(): Buffer {
    if (this.framed) return this.framed;
    const n = Buffer.byteLength(this.text);
    this.head = n < 126 ? 2 : n < 65536 ? 4 : 10;
    const out = Buffer.allocUnsafe(this.head + n);
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
    out.write(this.text, this.head, 'utf8');
    return (this.framed = out);
  }

  /** The text's UTF-8 bytes: a view into the frame, not a copy. */
  get bytes(): Buffer {
    return this.wsFrame.subarray(this.head);
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
