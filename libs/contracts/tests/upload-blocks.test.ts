import { blockId, blockListXml, planBlocks, remainingBlocks } from "../src/upload-blocks.js";

describe("cutting a file into Put Block blocks", () => {
  test("blocks cover the file exactly, the last one shorter, ids of one length", () => {
    const plan = planBlocks(10, 4);
    expect(plan.map(({ index, offset, size }) => ({ index, offset, size }))).toEqual([
      { index: 0, offset: 0, size: 4 },
      { index: 1, offset: 4, size: 4 },
      { index: 2, offset: 8, size: 2 },
    ]);
    expect(new Set(planBlocks(5_000_000, 100).map((b) => b.id.length)).size).toBe(1);
    expect(Buffer.from(blockId(42), "base64").toString()).toBe("block-000042");
    expect(planBlocks(0, 4)).toEqual([]);
    expect(() => planBlocks(10, 0)).toThrow("block size of 0 bytes");
  });

  test("on resume only blocks missing, or staged with another size, are sent again", () => {
    const plan = planBlocks(10, 4);
    const staged = [
      { blockId: plan[0]!.id, sizeBytes: 4n },
      { blockId: plan[1]!.id, sizeBytes: 3n },
      { blockId: blockId(7), sizeBytes: 4n },
    ];
    expect(remainingBlocks(plan, staged).map((b) => b.index)).toEqual([1, 2]);
    expect(remainingBlocks(plan, [])).toEqual(plan);
  });

  test("the block list commits every block in order", () => {
    const plan = planBlocks(9, 4);
    expect(blockListXml(plan)).toBe(
      `<?xml version="1.0" encoding="utf-8"?><BlockList><Latest>${plan[0]!.id}</Latest><Latest>${plan[1]!.id}</Latest><Latest>${plan[2]!.id}</Latest></BlockList>`,
    );
  });
});
