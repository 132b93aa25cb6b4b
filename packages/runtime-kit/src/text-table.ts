// The plain-text tables both CLIs print for an operator (`turnpike-relay allocations`,
// `turnpike-tunnel list`): a header row, columns padded to their widest cell, two spaces
// between them, no trailing blanks.

/** A column: its header and how a row shows in it. */
export type TextColumn<Row> = readonly [header: string, cell: (row: Row) => string];

/** The table, each line ending in a newline; `empty` (with its newline) when there are no rows. */
export function renderTextTable<Row>(
  columns: readonly TextColumn<Row>[],
  rows: readonly Row[],
  empty: string,
): string {
  if (rows.length === 0) return `${empty}\n`;
  const cells = [columns.map(([h]) => h), ...rows.map((r) => columns.map(([, f]) => f(r)))];
  const widths = columns.map((_, i) => Math.max(...cells.map((row) => row[i]!.length)));
  return `${cells
    .map((row) =>
      row
        .map((c, i) => c.padEnd(widths[i]!))
        .join("  ")
        .trimEnd(),
    )
    .join("\n")}\n`;
}
