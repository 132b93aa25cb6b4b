// The digests TURN's long-term credentials need, in plain C so the bench's native setup
// generator links nothing: SHA-1 (RFC 3174), MD5 (RFC 1321), HMAC-SHA1 (RFC 2104), base64
// (RFC 4648 §4) and the CRC-32 of STUN's FINGERPRINT (RFC 8489 §14.7, ISO 3309 / zlib's).
// Checked against the RFCs' test vectors by `turnpike-setupgen selftest` (bench/test).
#ifndef TURNPIKE_BENCH_DIGEST_H
#define TURNPIKE_BENCH_DIGEST_H

#include <stddef.h>
#include <stdint.h>
#include <string.h>

static inline uint32_t rol32(uint32_t x, int n) { return (x << n) | (x >> (32 - n)); }

// ---- SHA-1, RFC 3174 ----

struct sha1 {
  uint32_t h[5];
  uint64_t len; // bytes hashed so far
  uint8_t block[64];
  size_t fill;
};

static void sha1_compress(uint32_t h[5], const uint8_t b[64]) {
  uint32_t w[80];
  for (int t = 0; t < 16; t++)
    w[t] = (uint32_t)b[4 * t] << 24 | (uint32_t)b[4 * t + 1] << 16 | (uint32_t)b[4 * t + 2] << 8 |
           b[4 * t + 3];
  for (int t = 16; t < 80; t++) w[t] = rol32(w[t - 3] ^ w[t - 8] ^ w[t - 14] ^ w[t - 16], 1);
  uint32_t a = h[0], bb = h[1], c = h[2], d = h[3], e = h[4];
  for (int t = 0; t < 80; t++) {
    uint32_t f, k;
    if (t < 20) f = (bb & c) | (~bb & d), k = 0x5a827999;
    else if (t < 40) f = bb ^ c ^ d, k = 0x6ed9eba1;
    else if (t < 60) f = (bb & c) | (bb & d) | (c & d), k = 0x8f1bbcdc;
    else f = bb ^ c ^ d, k = 0xca62c1d6;
    uint32_t tmp = rol32(a, 5) + f + e + k + w[t];
    e = d, d = c, c = rol32(bb, 30), bb = a, a = tmp;
  }
  h[0] += a, h[1] += bb, h[2] += c, h[3] += d, h[4] += e;
}

static void sha1_init(struct sha1 *s) {
  *s = (struct sha1){.h = {0x67452301, 0xefcdab89, 0x98badcfe, 0x10325476, 0xc3d2e1f0}};
}

static void sha1_update(struct sha1 *s, const void *data, size_t n) {
  const uint8_t *p = data;
  s->len += n;
  while (n > 0) {
    size_t take = 64 - s->fill < n ? 64 - s->fill : n;
    memcpy(s->block + s->fill, p, take);
    s->fill += take, p += take, n -= take;
    if (s->fill == 64) {
      sha1_compress(s->h, s->block);
      s->fill = 0;
    }
  }
}

static void sha1_final(struct sha1 *s, uint8_t out[20]) {
  uint64_t bits = s->len * 8;
  uint8_t pad = 0x80, zero = 0, len[8];
  sha1_update(s, &pad, 1);
  while (s->fill != 56) sha1_update(s, &zero, 1);
  for (int i = 0; i < 8; i++) len[i] = (uint8_t)(bits >> (56 - 8 * i)); // big-endian length
  sha1_update(s, len, 8);
  for (int i = 0; i < 5; i++)
    for (int j = 0; j < 4; j++) out[4 * i + j] = (uint8_t)(s->h[i] >> (24 - 8 * j));
}

// ---- MD5, RFC 1321 ----

struct md5 {
  uint32_t h[4];
  uint64_t len;
  uint8_t block[64];
  size_t fill;
};

static void md5_compress(uint32_t h[4], const uint8_t b[64]) {
  // RFC 1321 §3.4: T[i] = floor(2^32 * |sin(i + 1)|), and the per-round shifts.
  static const uint32_t T[64] = {
      0xd76aa478, 0xe8c7b756, 0x242070db, 0xc1bdceee, 0xf57c0faf, 0x4787c62a, 0xa8304613,
      0xfd469501, 0x698098d8, 0x8b44f7af, 0xffff5bb1, 0x895cd7be, 0x6b901122, 0xfd987193,
      0xa679438e, 0x49b40821, 0xf61e2562, 0xc040b340, 0x265e5a51, 0xe9b6c7aa, 0xd62f105d,
      0x02441453, 0xd8a1e681, 0xe7d3fbc8, 0x21e1cde6, 0xc33707d6, 0xf4d50d87, 0x455a14ed,
      0xa9e3e905, 0xfcefa3f8, 0x676f02d9, 0x8d2a4c8a, 0xfffa3942, 0x8771f681, 0x6d9d6122,
      0xfde5380c, 0xa4beea44, 0x4bdecfa9, 0xf6bb4b60, 0xbebfbc70, 0x289b7ec6, 0xeaa127fa,
      0xd4ef3085, 0x04881d05, 0xd9d4d039, 0xe6db99e5, 0x1fa27cf8, 0xc4ac5665, 0xf4292244,
      0x432aff97, 0xab9423a7, 0xfc93a039, 0x655b59c3, 0x8f0ccc92, 0xffeff47d, 0x85845dd1,
      0x6fa87e4f, 0xfe2ce6e0, 0xa3014314, 0x4e0811a1, 0xf7537e82, 0xbd3af235, 0x2ad7d2bb,
      0xeb86d391};
  static const int S[4][4] = {{7, 12, 17, 22}, {5, 9, 14, 20}, {4, 11, 16, 23}, {6, 10, 15, 21}};
  uint32_t x[16];
  for (int i = 0; i < 16; i++)
    x[i] = b[4 * i] | (uint32_t)b[4 * i + 1] << 8 | (uint32_t)b[4 * i + 2] << 16 |
           (uint32_t)b[4 * i + 3] << 24; // little-endian words
  uint32_t a = h[0], bb = h[1], c = h[2], d = h[3];
  for (int i = 0; i < 64; i++) {
    uint32_t f;
    int g, r = i / 16;
    if (r == 0) f = (bb & c) | (~bb & d), g = i;
    else if (r == 1) f = (d & bb) | (~d & c), g = (5 * i + 1) % 16;
    else if (r == 2) f = bb ^ c ^ d, g = (3 * i + 5) % 16;
    else f = c ^ (bb | ~d), g = (7 * i) % 16;
    uint32_t tmp = d;
    d = c, c = bb;
    bb = bb + rol32(a + f + T[i] + x[g], S[r][i % 4]);
    a = tmp;
  }
  h[0] += a, h[1] += bb, h[2] += c, h[3] += d;
}

static void md5_init(struct md5 *s) {
  *s = (struct md5){.h = {0x67452301, 0xefcdab89, 0x98badcfe, 0x10325476}};
}

static void md5_update(struct md5 *s, const void *data, size_t n) {
  const uint8_t *p = data;
  s->len += n;
  while (n > 0) {
    size_t take = 64 - s->fill < n ? 64 - s->fill : n;
    memcpy(s->block + s->fill, p, take);
    s->fill += take, p += take, n -= take;
    if (s->fill == 64) {
      md5_compress(s->h, s->block);
      s->fill = 0;
    }
  }
}

static void md5_final(struct md5 *s, uint8_t out[16]) {
  uint64_t bits = s->len * 8;
  uint8_t pad = 0x80, zero = 0, len[8];
  md5_update(s, &pad, 1);
  while (s->fill != 56) md5_update(s, &zero, 1);
  for (int i = 0; i < 8; i++) len[i] = (uint8_t)(bits >> (8 * i)); // little-endian length
  md5_update(s, len, 8);
  for (int i = 0; i < 4; i++)
    for (int j = 0; j < 4; j++) out[4 * i + j] = (uint8_t)(s->h[i] >> (8 * j));
}

// ---- HMAC-SHA1, RFC 2104 ----

/** A key's inner and outer pads, hashed once: each MAC then costs two compressions less. */
struct hmac_sha1_key {
  struct sha1 inner, outer;
};

static void hmac_sha1_key(struct hmac_sha1_key *k, const void *key, size_t n) {
  uint8_t block[64] = {0}, ipad[64], opad[64];
  if (n > 64) {
    struct sha1 s;
    sha1_init(&s);
    sha1_update(&s, key, n);
    sha1_final(&s, block); // RFC 2104 §2: keys longer than B are hashed first
  } else {
    memcpy(block, key, n);
  }
  for (int i = 0; i < 64; i++) ipad[i] = block[i] ^ 0x36, opad[i] = block[i] ^ 0x5c;
  sha1_init(&k->inner);
  sha1_update(&k->inner, ipad, 64);
  sha1_init(&k->outer);
  sha1_update(&k->outer, opad, 64);
}

static void hmac_sha1_with(const struct hmac_sha1_key *k, const void *data, size_t n,
                           uint8_t out[20]) {
  struct sha1 s = k->inner;
  uint8_t inner[20];
  sha1_update(&s, data, n);
  sha1_final(&s, inner);
  s = k->outer;
  sha1_update(&s, inner, 20);
  sha1_final(&s, out);
}

static void hmac_sha1(const void *key, size_t keylen, const void *data, size_t n,
                      uint8_t out[20]) {
  struct hmac_sha1_key k;
  hmac_sha1_key(&k, key, keylen);
  hmac_sha1_with(&k, data, n, out);
}

// ---- base64, RFC 4648 §4 (with padding) ----

/** Writes the encoding and a NUL; `out` holds 4 * ceil(n / 3) + 1 bytes. Returns its length. */
static size_t base64_encode(const uint8_t *in, size_t n, char *out) {
  static const char A[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
  size_t o = 0;
  for (size_t i = 0; i < n; i += 3) {
    uint32_t v = (uint32_t)in[i] << 16 | (i + 1 < n ? (uint32_t)in[i + 1] << 8 : 0) |
                 (i + 2 < n ? in[i + 2] : 0);
    out[o++] = A[v >> 18 & 63];
    out[o++] = A[v >> 12 & 63];
    out[o++] = i + 1 < n ? A[v >> 6 & 63] : '=';
    out[o++] = i + 2 < n ? A[v & 63] : '=';
  }
  out[o] = '\0';
  return o;
}

// ---- CRC-32 (reflected, polynomial 0xEDB88320), as STUN's FINGERPRINT uses ----

static uint32_t crc32_of(const uint8_t *p, size_t n) {
  static uint32_t table[256];
  static int ready;
  if (!ready) {
    for (uint32_t i = 0; i < 256; i++) {
      uint32_t c = i;
      for (int j = 0; j < 8; j++) c = c & 1 ? 0xedb88320u ^ (c >> 1) : c >> 1;
      table[i] = c;
    }
    ready = 1;
  }
  uint32_t c = 0xffffffffu;
  for (size_t i = 0; i < n; i++) c = table[(c ^ p[i]) & 0xff] ^ (c >> 8);
  return c ^ 0xffffffffu;
}

#endif
