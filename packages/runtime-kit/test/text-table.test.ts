// The operators' plain-text tables: columns as wide as their widest cell, two spaces apart, no
// trailing blanks, and a sentence instead of a bare header when there is nothing to show.
import { describe, expect, it } from "vitest";
import { renderTextTable, type TextColumn } from "../src/text-table.js";

interface Row {
  readonly id: string;
  readonly peers: readonly string[];
}
const COLUMNS: readonly TextColumn<Row>[] = [
  ["ID", (r) => r.id],
  ["PEERS", (r) => (r.peers.length === 0 ? "-" : r.peers.join(","))],
];

describe("a text table", () => {
  it("pads each column to its widest cell and trims the end of each line", () => {
    const rows = [
      { id: "0-17", peers: ["192.0.2.1", "192.0.2.2"] },
      { id: "1-3", peers: [] },
    ];
    expect(renderTextTable(COLUMNS, rows, "none")).toBe(
      "ID    PEERS\n0-17  192.0.2.1,192.0.2.2\n1-3   -\n",
    );
  });

  it("says the empty sentence, not a bare header, without rows", () => {
    expect(renderTextTable(COLUMNS, [], "no allocations")).toBe("no allocations\n");
  });
});
