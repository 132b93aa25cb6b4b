#!/usr/bin/env -S node --max-semi-space-size=1
// A committed launcher, so pnpm can link the bin before `tsc -b` has produced dist/.
import "../dist/cli.js";
