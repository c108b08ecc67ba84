// The Guacamole wire format: `LEN.VALUE,LEN.VALUE;`, lengths in Unicode code points (a
// character outside the Basic Multilingual Plane, two UTF-16 units, counts once), as ztproxy
// and guacd count them. Instructions may span messages and a message may hold several.

/** The longest instruction accepted from ztproxy, in UTF-16 code units. */
export const MAX_INSTRUCTION = 16 * 1024 * 1024;

/**
 * Splits text into Guacamole instructions. Element lengths count code points, so a
 * character outside the Basic Multilingual Plane (two UTF-16 units) counts once.
 */
export class InstructionParser {
  private buffer = "";
  private elements: string[] = [];
  /** Where the next element starts in `buffer`. */
  private start = 0;

  /** Called with each complete instruction. */
  oninstruction: (opcode: string, args: string[]) => void = () => {};

  /** Adds text; throws an Error on malformed input. */
  receive(text: string): void {
    this.buffer = this.start > 0 ? this.buffer.slice(this.start) + text : this.buffer + text;
    this.start = 0;
    const buffer = this.buffer;
    for (;;) {
      const dot = buffer.indexOf(".", this.start);
      if (dot < 0) {
        if (buffer.length - this.start > 10) throw new Error("malformed instruction: no length");
        break;
      }
      const lengthText = buffer.slice(this.start, dot);
      if (!/^[0-9]{1,10}$/.test(lengthText)) throw new Error("malformed instruction: bad length");
      const length = Number(lengthText);
      if (length > MAX_INSTRUCTION) throw new Error("instruction too long");
      // Walk `length` code points.
      let end = dot + 1;
      let counted = 0;
      while (counted < length && end < buffer.length) {
        const unit = buffer.charCodeAt(end);
        end += unit >= 0xd800 && unit <= 0xdbff ? 2 : 1;
        counted++;
      }
      if (counted < length || end >= buffer.length) {
        if (buffer.length - this.start > MAX_INSTRUCTION) throw new Error("instruction too long");
        break;
      }
      this.elements.push(buffer.slice(dot + 1, end));
      const terminator = buffer[end];
      this.start = end + 1;
      if (terminator === ";") {
        const [opcode, ...args] = this.elements;
        this.elements = [];
        this.oninstruction(opcode ?? "", args);
      } else if (terminator !== ",") {
        throw new Error("malformed instruction: bad terminator");
      }
    }
  }
}

/** Encodes one instruction. */
export function encode(elements: readonly unknown[]): string {
  return (
    elements
      .map((element) => {
        const text = String(element);
        let length = 0;
        for (const _ of text) length++;
        return `${length}.${text}`;
      })
      .join(",") + ";"
  );
}

