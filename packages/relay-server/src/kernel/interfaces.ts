// Which interfaces the kernel data path attaches to: those that carry the relay's UDP listen
// addresses and its relay addresses, where clients' ChannelData and peers' datagrams arrive
// (TC ingress). An address is looked up among the host's interface addresses; a loopback
// address (127.0.0.0/8, ::1) is the loopback interface's; a wildcard listener (0.0.0.0, ::)
// answers on every interface, so it means every interface that is up. Datagrams a client on
// this host sends to any local address arrive on the loopback: attached only when a loopback
// address is configured (or a wildcard), otherwise such clients are relayed in userspace.
//
// The host's interfaces are injected (os.networkInterfaces and /sys/class/net), for tests.

import { readdirSync, readFileSync } from "node:fs";
import { isIPv4 } from "node:net";
import { networkInterfaces } from "node:os";
import type { Interfaces } from "../config/host-addresses.js";
import { isUnspecified } from "../config/values.js";

/** IFF_UP (linux/if.h). */
const IFF_UP = 0x1;
/** ARPHRD_ETHER and ARPHRD_LOOPBACK: the program expects an Ethernet header in front. */
const ETHERNET_TYPES = new Set([1, 772]);

/** What an interface is, as /sys/class/net says. */
export interface LinkInfo {
  readonly name: string;
  readonly up: boolean;
  /** ARPHRD_* */
  readonly type: number;
}

export interface HostLinks {
  readonly addresses: () => Interfaces;
  readonly links: () => readonly LinkInfo[];
}

function sysNumber(name: string, what: string): number {
  try {
    return Number(readFileSync(`/sys/class/net/${name}/${what}`, "utf8").trim());
  } catch {
    return Number.NaN;
  }
}

export const HOST_LINKS: HostLinks = {
  addresses: networkInterfaces,
  links: () => {
    let names: string[];
    try {
      names = readdirSync("/sys/class/net");
    } catch {
      return [];
    }
    return names.map((name) => ({
      name,
      up: (sysNumber(name, "flags") & IFF_UP) !== 0,
      type: sysNumber(name, "type"),
    }));
  },
};

export type InterfacePlan =
  | {
      readonly ok: true;
      readonly interfaces: readonly string[];
      /** Up interfaces a wildcard listener covers that cannot carry the program (not Ethernet). */
      readonly skipped: readonly string[];
    }
  | { readonly ok: false; readonly reason: string };

function isLoopback(ip: string): boolean {
  return isIPv4(ip) ? ip.startsWith("127.") : ip === "::1";
}

/** The interfaces carrying `addresses` (listen and relay addresses), in a stable order. */
export function interfacesFor(
  addresses: readonly string[],
  host: HostLinks = HOST_LINKS,
): InterfacePlan {
  const nics = host.addresses();
  const out = new Set<string>();
  const skipped = new Set<string>();
  const loopback = () =>
    Object.entries(nics).find(([, addrs]) => addrs?.some((a) => a.internal))?.[0] ?? "lo";
  for (const ip of addresses) {
    if (isUnspecified(ip)) {
      for (const link of host.links()) {
        if (!link.up) continue;
        if (ETHERNET_TYPES.has(link.type)) out.add(link.name);
        else skipped.add(link.name);
      }
      continue;
    }
    if (isLoopback(ip)) {
      out.add(loopback());
      continue;
    }
    const lower = ip.toLowerCase();
    const carrier = Object.entries(nics).find(([, addrs]) =>
      addrs?.some((a) => a.address.toLowerCase() === lower),
    )?.[0];
    if (carrier === undefined) return { ok: false, reason: `no interface carries ${ip}` };
    out.add(carrier);
  }
  if (out.size === 0) return { ok: false, reason: "no interface is up" };
  return { ok: true, interfaces: [...out].sort(), skipped: [...skipped].sort() };
}

/** Whether `ip` is one of this host's interface addresses. */
export function isLocalAddress(ip: string, host: HostLinks = HOST_LINKS): boolean {
  const lower = ip.toLowerCase();
  return Object.values(host.addresses()).some((addrs) =>
    addrs?.some((a) => a.address.toLowerCase() === lower),
  );
}
