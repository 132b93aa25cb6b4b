/// <reference path="../src/types/stun.d.ts" />
// The micro rows that drive relay-core with a scripted load (bench/src/micro.ts): every request
// of every round must be answered as a real client expects, or the row reports why instead of
// a figure.
import * as core from "@turnpike/relay-core";
import { describe, expect, it } from "vitest";
import { cycleRows } from "../src/micro.js";

describe("micro: setups and churn through relay-core", () => {
  it("times a setup and a churn cycle in which every request got its expected answer", () => {
    const rows = cycleRows(core, true);
    expect(rows.map((r) => r.name)).toEqual([
      "one setup through relay-core (401, Allocate, CreatePermission, ChannelBind)",
      "one churn cycle through relay-core (401, Allocate, Refresh, Refresh 0)",
    ]);
    for (const row of rows) {
      expect(row.note).toMatch(
        /^median of 5 rounds of 500 clients \(16 REST users\), after 2000 untimed; rounds /,
      );
      expect(row.nsPerOp).toBeGreaterThan(0);
    }
  });
});
