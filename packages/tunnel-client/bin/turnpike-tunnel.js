#!/usr/bin/env node
// A committed launcher, so pnpm can link the bin before `tsc -b` has produced dist/.
import "../dist/cli.js";
