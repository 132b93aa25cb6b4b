// The scenario list. `tunnel` is not per server (it measures four paths, two of them through
// the relays): cli.ts runs it through runTunnelScenario.
import { allocationsScenario } from "./allocations.js";
import { churnScenario } from "./churn.js";
import { relayScenario } from "./relay.js";
import type { Scenario } from "./types.js";

export const scenarios: Record<string, Scenario> = {
  relay: relayScenario,
  allocations: allocationsScenario,
  churn: churnScenario,
};

/** What runs when no scenario is named. */
export const defaultScenarios = ["relay", "allocations", "churn", "tunnel"];
