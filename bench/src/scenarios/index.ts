// The scenario list. `tunnel` is listed but refuses to run until turnpike-tunnel exists.
import { allocationsScenario } from "./allocations.js";
import { churnScenario } from "./churn.js";
import { relayScenario } from "./relay.js";
import type { Scenario } from "./types.js";

export const scenarios: Record<string, Scenario> = {
  relay: relayScenario,
  allocations: allocationsScenario,
  churn: churnScenario,
  // TODO(tunnel): iperf3 through turnpike-tunnel over Turnpike, the same with coturn as the
  // relay, through an `ssh -R` reverse tunnel on loopback, and direct (issue 6 §1).
  tunnel: async () => {
    throw new Error("tunnel scenario: not available yet (needs turnpike-tunnel)");
  },
};

/** What runs when no scenario is named. */
export const defaultScenarios = ["relay", "allocations", "churn"];
