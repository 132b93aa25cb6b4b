// A CLI's --help as yargs (through runtime-kit) prints it, taken apart for assertions.

/**
 * The option entries of a --help text: flag -> its description lines (the first beside the
 * flag, the rest indented below it) joined by single spaces.
 */
export function optionBlocks(help: string): Map<string, string> {
  const blocks = new Map<string, string>();
  let current: string | undefined;
  for (const line of help.split("\n")) {
    const entry = /^\s+(?:-\w, )?(--[\w-]+)\s{2,}(.*)$/.exec(line);
    if (entry) {
      current = entry[1]!;
      blocks.set(current, entry[2]!.trim());
    } else if (current !== undefined && /^\s{6,}\S/.test(line)) {
      blocks.set(current, `${blocks.get(current)} ${line.trim()}`);
    } else current = undefined;
  }
  return blocks;
}
