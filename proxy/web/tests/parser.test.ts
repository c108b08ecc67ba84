// The wire format of the page's tunnel: what ztproxy sends, split anywhere into messages,
// parses back to the same instructions; malformed input is an error, never a hang or a
// wrong instruction. Run by `npm test` (scripts/test).

import assert from "node:assert/strict";
import { test } from "node:test";
import { encode, InstructionParser, MAX_INSTRUCTION } from "../src/parser";

/** A small deterministic generator (xorshift32). */
function random(seed: number): () => number {
  let state = seed >>> 0 || 1;
  return () => {
    state ^= state << 13;
    state >>>= 0;
    state ^= state >>> 17;
    state ^= state << 5;
    state >>>= 0;
    return state / 0x1_0000_0000;
  };
}

const ALPHABET = ["a", "Z", "0", ".", ",", ";", " ", "é", "€", "日", "😀", "𝄞", "\n", "\\"];

function element(next: () => number): string {
  const length = Math.floor(next() * 12);
  let text = "";
  for (let i = 0; i < length; i++) text += ALPHABET[Math.floor(next() * ALPHABET.length)];
  return text;
}

function parseAll(chunks: string[]): string[][] {
  const parser = new InstructionParser();
  const seen: string[][] = [];
  parser.oninstruction = (opcode, args) => seen.push([opcode, ...args]);
  for (const chunk of chunks) parser.receive(chunk);
  return seen;
}

test("instructions split anywhere parse back whole, lengths in code points", () => {
  for (let seed = 1; seed <= 300; seed++) {
    const next = random(seed);
    const instructions: string[][] = [];
    const count = 1 + Math.floor(next() * 6);
    for (let i = 0; i < count; i++) {
      const args = Array.from({ length: Math.floor(next() * 5) }, () => element(next));
      instructions.push([["sync", "blob", "clipboard", "key"][Math.floor(next() * 4)] ?? "nop", ...args]);
    }
    const wire = instructions.map(encode).join("");
    // Split at random UTF-16 positions, surrogate pairs included (a message boundary never
    // splits a character on the wire, but the parser must not care).
    const chunks: string[] = [];
    let at = 0;
    while (at < wire.length) {
      const size = 1 + Math.floor(next() * 9);
      chunks.push(wire.slice(at, at + size));
      at += size;
    }
    assert.deepEqual(parseAll(chunks), instructions, `seed ${seed}`);
  }
});

test("a length counts code points: 😀 is one", () => {
  assert.equal(encode(["a", "😀x"]), "1.a,2.😀x;");
  assert.deepEqual(parseAll(["1.a,2.😀x;"]), [["a", "😀x"]]);
});

test("malformed input is an error", () => {
  for (const bad of ["x.abc;", "3.abcd;", "-1.a;", "1.a!", "12345678901.a;", "1.a,2.bc:"]) {
    assert.throws(() => parseAll([bad]), Error, JSON.stringify(bad));
  }
});

test("a claimed length beyond the limit is refused before it is buffered", () => {
  assert.throws(() => parseAll([`${MAX_INSTRUCTION + 1}.`]), /too long/);
});
