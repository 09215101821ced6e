import assert from 'node:assert/strict';
import { summarizeAllocations, type AllocationNode } from '../src/captures/heapprofile.js';

let nextId = 1;
function node(functionName: string, selfSize: number, children: AllocationNode[] = []): AllocationNode {
  return {
    id: nextId++,
    callFrame: { functionName, url: 'file:///app.js', lineNumber: functionName.length, columnNumber: 0, scriptId: '1' },
    selfSize,
    children,
  };
}

describe('allocation profile summary', () => {
  it("adds up a function's bytes across its stacks, and lists stacks innermost first", () => {
    const profile = {
      head: node('(root)', 0, [
        node('handle', 10, [node('cacheSet', 600), node('parse', 100)]),
        node('tick', 0, [node('cacheSet', 300)]),
      ]),
    };
    const summary = summarizeAllocations(profile);
    assert.equal(summary.totalBytes, 1010);
    assert.deepEqual(
      summary.topFunctions.map((f) => [f.functionName, f.bytes]),
      [
        ['cacheSet', 900],
        ['parse', 100],
        ['handle', 10],
      ],
    );
    assert.deepEqual(
      summary.topStacks[0]?.stack.map((f) => f.functionName),
      ['cacheSet', 'handle'],
    );
    assert.deepEqual(
      summary.topStacks[1]?.stack.map((f) => f.functionName),
      ['cacheSet', 'tick'],
    );
    assert.ok(Math.abs((summary.topStacks[0]?.share ?? 0) - 600 / 1010) < 1e-9);
  });

  it('names anonymous functions, and handles a deep tree without recursion', () => {
    let deep = node('', 5);
    for (let i = 0; i < 50_000; i++) deep = node('level', 0, [deep]);
    const summary = summarizeAllocations({ head: node('(root)', 0, [deep]) });
    assert.equal(summary.topFunctions[0]?.functionName, '(anonymous)');
    assert.equal(summary.topStacks[0]?.stack.length, 16, 'stacks are cut to 16 frames');
  });

  it('throws a clear error for a malformed profile', () => {
    assert.throws(() => summarizeAllocations(null), /Invalid heap profile: no head node/);
    assert.throws(
      () => summarizeAllocations({ head: { id: 1, callFrame: {}, selfSize: -1, children: [] } }),
      /selfSize -1/,
    );
    assert.throws(() => summarizeAllocations({ head: { id: 1, callFrame: {}, selfSize: 0 } }), /no children array/);
  });
});
