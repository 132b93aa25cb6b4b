// relay.ts imports the production RandomSource from here; the one implementation lives in
// runtime-kit (shared with turnpike-tunnel). This re-export goes once relay.ts, which another
// change is rewriting right now, imports it from @turnpike/runtime-kit itself.
export { CryptoRandom } from "@turnpike/runtime-kit";
