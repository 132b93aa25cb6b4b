// Fills the generated tables of the root README between their markers
// (`<!-- config-table:start ... -->` ... `<!-- config-table:end -->`, same for metrics-table).
import { renderConfigTable } from "./config/options.js";
import { renderMetricsTable } from "./metrics.js";

export function fillReadmeTables(readme: string): string {
  return fill(
    fill(readme, "config-table", renderConfigTable()),
    "metrics-table",
    renderMetricsTable(),
  );
}

function fill(text: string, name: string, table: string): string {
  const start = text.indexOf(`<!-- ${name}:start`);
  const end = text.indexOf(`<!-- ${name}:end -->`);
  if (start < 0 || end < start) throw new Error(`README has no ${name} markers`);
  const afterStart = text.indexOf("-->", start) + 3;
  return `${text.slice(0, afterStart)}\n${table.trimEnd()}\n${text.slice(end)}`;
}
