#!/usr/bin/env -S node --max-semi-space-size=1 --nomaglev
// A committed launcher, so pnpm can link the bin before `tsc -b` has produced dist/.
// V8's optimizing compilers are held while the CLI's modules load (runtime-kit's
// startup-tiering.ts says why): Maglev by --nomaglev above (only a flag is early enough),
// TurboFan here; the CLI lets both go once it is up. The CLI is imported after the hold, not
// beside it: a static import would load its whole module graph before this module's first line
// ran.
import { holdOptimizingCompiler } from "@turnpike/runtime-kit/startup-tiering";

holdOptimizingCompiler();
await import("../dist/cli.js");
