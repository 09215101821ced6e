/**
 * Checks on an addon's file made before it is loaded, because loading is not a test one
 * survives: dlopen maps the file's segments, and a truncated file (a copy cut short, a full
 * disk during install) is only found out when the process touches a page past its end —
 * SIGBUS, the whole service gone. And an addon on V8's C++ API registered through Node-API
 * is not checked by Node against the ABI it was built for: built for another Node, it
 * loads and then misreads V8's objects.
 *
 * So: the ELF headers say how long the file must be (program and section header tables, each
 * loaded segment, each section with contents); a shorter file is refused. And gc_stats carries
 * the ABI it was built for as the text `sysprobe-abi:<N>;` (native/gc_stats.cc), found in the
 * file and compared with this Node's. Reads are bounded in size.
 */
import * as fs from 'node:fs';

/** The most of an addon's file read for the checks (ours are 30–120 KB). */
const MAX_READ_BYTES = 32 << 20;
const ABI_MARK = Buffer.from('sysprobe-abi:');

function readAt(fd: number, length: number, position: number): Buffer {
  const buf = Buffer.alloc(length);
  const n = fs.readSync(fd, buf, 0, length, position);
  return buf.subarray(0, n);
}

/**
 * Why an ELF file cannot be loaded whole (too short for what its headers describe, or not
 * ELF at all); undefined when it is whole. `size` is the file's length in bytes.
 */
export function elfProblem(fd: number, size: number): string | undefined {
  const ident = readAt(fd, 64, 0);
  if (ident.length < 16 || ident.readUInt32BE(0) !== 0x7f454c46) return 'not an ELF file';
  const is64 = ident[4] === 2;
  const little = ident[5] === 1;
  if ((ident[4] !== 1 && !is64) || (ident[5] !== 1 && ident[5] !== 2))
    return 'an ELF file of unknown class or byte order';
  if (ident.length < (is64 ? 64 : 52)) return `truncated: ${size} bytes, shorter than its ELF header`;
  const u16 = (b: Buffer, at: number) => (little ? b.readUInt16LE(at) : b.readUInt16BE(at));
  const u32 = (b: Buffer, at: number) => (little ? b.readUInt32LE(at) : b.readUInt32BE(at));
  const word = (b: Buffer, at: number) =>
    is64 ? Number(little ? b.readBigUInt64LE(at) : b.readBigUInt64BE(at)) : u32(b, at);
  const phoff = word(ident, is64 ? 0x20 : 0x1c);
  const shoff = word(ident, is64 ? 0x28 : 0x20);
  const phentsize = u16(ident, is64 ? 0x36 : 0x2a);
  const phnum = u16(ident, is64 ? 0x38 : 0x2c);
  const shentsize = u16(ident, is64 ? 0x3a : 0x2e);
  const shnum = u16(ident, is64 ? 0x3c : 0x30);
  const needs: Array<[string, number]> = [
    ['its program headers', phoff + phnum * phentsize],
    ['its section headers', shoff + shnum * shentsize],
  ];
  const short = (what: string, end: number) => `truncated: ${size} bytes, but ${what} end at byte ${end}`;
  for (const [what, end] of needs) if (end > size) return short(what, end);
  if (phnum > 0 && phentsize >= (is64 ? 40 : 20)) {
    const table = readAt(fd, phnum * phentsize, phoff);
    for (let i = 0; i < phnum; i++) {
      const at = i * phentsize;
      if (u32(table, at) !== 1) continue; // PT_LOAD: what dlopen maps
      const offset = word(table, at + (is64 ? 8 : 4));
      const filesz = word(table, at + (is64 ? 32 : 16));
      if (offset + filesz > size) return short(`loaded segment ${i}`, offset + filesz);
    }
  }
  if (shnum > 0 && shentsize >= (is64 ? 40 : 24)) {
    const table = readAt(fd, shnum * shentsize, shoff);
    for (let i = 0; i < shnum; i++) {
      const at = i * shentsize;
      if (u32(table, at + 4) === 8) continue; // SHT_NOBITS (.bss): no bytes in the file
      const offset = word(table, at + (is64 ? 24 : 16));
      const length = word(table, at + (is64 ? 32 : 20));
      if (offset + length > size) return short(`section ${i}`, offset + length);
    }
  }
  return undefined;
}

/** The Node ABI an addon marked itself with (`sysprobe-abi:<N>;`), or undefined when it carries no mark. */
export function abiMark(fd: number, size: number): string | undefined {
  const text = readAt(fd, Math.min(size, MAX_READ_BYTES), 0);
  const at = text.indexOf(ABI_MARK);
  if (at < 0) return undefined;
  const m = /^(\d+);/.exec(text.toString('latin1', at + ABI_MARK.length, at + ABI_MARK.length + 12));
  return m?.[1];
}

/**
 * Why this addon file must not be loaded, or undefined when it may. ELF checks on Linux
 * (elsewhere the file is left to the loader); `needsAbi`: the addon is on V8's C++ API and
 * must carry this Node's ABI mark.
 */
export function fileProblem(file: string, needsAbi: boolean): string | undefined {
  let fd: number | undefined;
  try {
    fd = fs.openSync(file, 'r');
    const size = fs.fstatSync(fd).size;
    if (size > MAX_READ_BYTES) return `${size} bytes: larger than any addon of sysprobe's`;
    if (process.platform === 'linux') {
      const problem = elfProblem(fd, size);
      if (problem) return problem;
    }
    if (needsAbi) {
      const abi = abiMark(fd, size);
      if (abi === undefined)
        return `carries no ABI mark (built by an older sysprobe); it is on V8's C++ API, so only a build for this Node (ABI ${process.versions.modules}) may load: npm run build:native`;
      if (abi !== process.versions.modules)
        return `built for Node ABI ${abi}, this Node is ABI ${process.versions.modules}; it is on V8's C++ API, so it would misread V8's objects: npm run build:native`;
    }
    return undefined;
  } catch (err) {
    return `unreadable: ${err instanceof Error ? err.message : String(err)}`;
  } finally {
    if (fd !== undefined) fs.closeSync(fd);
  }
}
