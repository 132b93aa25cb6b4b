// A progress bar on stderr with live packets/s; silent when stderr is not a terminal.
import cliProgress from "cli-progress";

export class Progress {
  private bar: cliProgress.SingleBar | undefined;

  constructor(private readonly enabled = process.stderr.isTTY === true) {}

  start(label: string, total: number): void {
    if (!this.enabled) return;
    this.stop();
    this.bar = new cliProgress.SingleBar(
      {
        stream: process.stderr,
        format: `${label.padEnd(28)} [{bar}] {percentage}% | {rate} | {info}`,
        hideCursor: true,
        clearOnComplete: false,
        barsize: 24,
        fps: 5,
      },
      cliProgress.Presets.shades_classic,
    );
    this.bar.start(total, 0, { rate: "", info: "" });
  }

  update(value: number, rate: string, info = ""): void {
    this.bar?.update(value, { rate, info });
  }

  stop(): void {
    this.bar?.stop();
    this.bar = undefined;
  }
}
