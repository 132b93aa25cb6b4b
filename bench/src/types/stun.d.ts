// The `stun` npm package ships no types; the micro-benchmark only calls its decoder.
declare module "stun" {
  const stun: {
    decode(message: Buffer): unknown;
  };
  export default stun;
}
