#!/usr/bin/env -S node --max-semi-space-size=1
// A committed launcher, so pnpm can link the bin before `tsc -b` has produced dist/.
// TurboFan is held while the CLI's modules load (runtime-kit's startup-tiering.ts says why);
// the CLI lets it go once it is up. The CLI is imported after the hold, not beside it: a static
// import would load its whole module graph before this module's first line ran.
import { holdOptimizingCompiler } from "@turnpike/runtime-kit/startup-tiering";

holdOptimizingCompiler();
await import("../dist/cli.js");
