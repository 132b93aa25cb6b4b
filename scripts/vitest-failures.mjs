// What failed on each Node line, from vitest's JSON reports (scripts/vitest-node-lines.sh):
// one line per failed test (file, test name, the first line of its error), or per failed file
// when it failed outside a test (an import error, a hook), so the end of a CI log names them.
// A report that is missing or unreadable is said so: the run itself died before writing it.
import { readFileSync } from "node:fs";
import { basename } from "node:path";
import { stripVTControlCharacters } from "node:util";

const MAX_PER_LINE = 30;

for (const path of process.argv.slice(2)) {
  const line = /node-(\d+)\.json$/.exec(basename(path))?.[1] ?? path;
  let report;
  try {
    report = JSON.parse(readFileSync(path, "utf8"));
  } catch (err) {
    console.log(
      `=== Node ${line}: no test report (${err.code ?? err.message}): the run ended before vitest wrote it ===`,
    );
    continue;
  }
  const failures = [];
  for (const file of report.testResults ?? []) {
    const name = file.name.replace(`${process.cwd()}/`, "");
    const failedTests = (file.assertionResults ?? []).filter((t) => t.status === "failed");
    for (const t of failedTests)
      failures.push(`${name} > ${t.fullName}: ${firstLine(t.failureMessages?.[0])}`);
    if (failedTests.length === 0 && file.status === "failed")
      failures.push(`${name}: ${firstLine(file.message)}`);
  }
  const summary = `${report.numFailedTests ?? 0} failed, ${report.numPassedTests ?? 0} passed`;
  if (failures.length === 0) {
    console.log(`=== Node ${line}: ${summary}, no failed file ===`);
    continue;
  }
  console.log(`=== Node ${line}: ${summary}; what failed: ===`);
  for (const f of failures.slice(0, MAX_PER_LINE)) console.log(`  FAILED ${f}`);
  if (failures.length > MAX_PER_LINE)
    console.log(`  ... and ${failures.length - MAX_PER_LINE} more`);
}

function firstLine(text) {
  // Without the terminal's colours, and short: the full message is in the log above.
  const plain = stripVTControlCharacters(String(text ?? ""));
  const first = plain.split("\n").find((l) => l.trim() !== "") ?? "(no message)";
  return first.trim().slice(0, 300);
}
