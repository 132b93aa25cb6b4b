// turnpike-setupgen: the bench's native setup generator (bench/README.md, "The setup
// generator"), for the allocations and churn scenarios.
//
// It speaks just enough STUN/TURN over UDP to set allocations up the way the bench's
// JavaScript client (bench/src/load/turn-load-client.ts) does, message for message:
//   Allocate (REQUESTED-TRANSPORT UDP, LIFETIME 600) -> 401 with REALM and NONCE (RFC 8489
//   §9.2.4) -> Allocate with USERNAME, REALM, NONCE, MESSAGE-INTEGRITY (HMAC-SHA1 keyed with
//   MD5(username:realm:password), §9.2.2) -> CreatePermission -> ChannelBind (RFC 8656 §9,
//   §11), or for churn: -> Refresh(600) -> Refresh(0) (RFC 8656 §7.3: 0 deletes).
// Every request ends with FINGERPRINT (RFC 8489 §14.7), as the JavaScript client's do. A 438
// (stale nonce) or 401 brings a new nonce and the request is sent again, at most 3 times.
// Credentials are TURN REST ones (draft-uberti-behave-turn-rest-00 §2.2, as coturn's
// static-auth-secret): username "<expiry>:<user>", password base64(HMAC-SHA1(secret, username)).
//
// One connected UDP socket per setup (its own 5-tuple), all on one epoll; at most
// `concurrency` setups in flight; lost requests retransmitted after 500 ms, doubling, 6 sends
// in all (RFC 8489 §6.2.1, the JavaScript client's count); every run bounded in time.
// Allocations' sockets stay open after their setup until `close` (the scenario reads the
// relay's memory with all of them live); closing is closing the sockets, as the JavaScript
// client's close() does.
//
// The bench talks to it on stdin/stdout, one line each:
//   server IP PORT                -> (no answer)   the relay
//   secret SECRET                 -> (no answer)   the TURN REST shared secret (not in argv)
//   rto MS                        -> (no answer)   the first retransmission timeout (500 ms)
//   open COUNT CONCURRENCY PREFIX BIND PEERIP PEERPORT BOUNDSECONDS [DELETE]
//       -> progress DONE FAILED every 250 ms, then
//          opened DONE FAILED ELAPSEDSECONDS CPUMICROS LIVE [FIRSTERROR...]
//       DELETE 1: each setup ends with Refresh(0) and its socket is closed, so nothing stays
//       allocated (the scenarios' warm-up: the setup path run as often as V8 needs to compile
//       it, without holding relay ports); a setup counts as done once its delete succeeded.
//   churn WORKERS SECONDS CYCLESPERWORKER PREFIX   (CYCLESPERWORKER 0 = until SECONDS)
//       -> progress CYCLES FAILED every 250 ms, then
//          churned CYCLES FAILED ELAPSEDSECONDS CPUMICROS [FIRSTERROR...]
//   close                         -> closed N      (every allocation kept open so far)
//   quit, or stdin closed         -> exit 0
// CPUMICROS is this process's own CPU (user + system) over the run.
// `turnpike-setupgen selftest` checks digest.h against RFC 3174, 1321, 2202 and 4648 vectors.
#include "common.h" // first: it defines _GNU_SOURCE

#include "digest.h"

#include <sys/epoll.h>
#include <sys/random.h>
#include <sys/resource.h>

#define MAX_CONCURRENCY 16384 // churn runs a slot per worker (--allocations workers)
#define RTO_NS 500000000ull
#define MAX_TRANSMITS 6
#define MAX_AUTH_ATTEMPTS 3
#define CHURN_PAUSE_NS 20000000ull // a failed cycle waits this long, as churn.ts's does
#define PROGRESS_NS 250000000ull
// The bench's own local ports: below the kernel's ephemeral range and the relay's range
// (bench/src/ports.ts), so no setup socket takes a port a relay wants to allocate.
#define PORT_FIRST 12000
#define PORT_LAST 32000
#define BIND_ATTEMPTS 200

#define MAGIC 0x2112a442u
enum {
  M_ALLOCATE = 0x003,
  M_REFRESH = 0x004,
  M_CREATE_PERMISSION = 0x008,
  M_CHANNEL_BIND = 0x009,
};
enum {
  A_USERNAME = 0x0006,
  A_MESSAGE_INTEGRITY = 0x0008,
  A_ERROR_CODE = 0x0009,
  A_CHANNEL_NUMBER = 0x000c,
  A_LIFETIME = 0x000d,
  A_XOR_PEER_ADDRESS = 0x0012,
  A_REALM = 0x0014,
  A_NONCE = 0x0015,
  A_XOR_RELAYED_ADDRESS = 0x0016,
  A_REQUESTED_TRANSPORT = 0x0019,
  A_FINGERPRINT = 0x8028,
};

/** The steps of one setup (allocations) or one cycle (churn). */
enum step { S_ALLOCATE, S_PERMISSION, S_CHANNEL, S_REFRESH, S_DELETE, S_DONE };

/** A user's TURN REST credential and its long-term key for the realm last seen. */
struct cred {
  char username[128];
  char password[32];
  char realm[128];
  uint8_t key[16];
  int keyed;
};

struct slot {
  int fd; // -1: idle
  enum step step;
  uint32_t index; // allocation index (open) or worker (churn)
  struct cred *cred;
  int authed; // realm and nonce known: requests carry the credential
  char realm[128];
  uint8_t nonce[256];
  size_t nonce_len;
  int attempt;   // authenticated attempts at this step
  int transmits; // sends of the current request
  uint64_t wake; // next retransmission, or the end of a churn pause
  int paused;
  uint32_t cycles;
  uint8_t tx[12];
  uint8_t msg[512];
  size_t msg_len;
};

static struct sockaddr_in server = {.sin_family = AF_INET};
static char secret[512];
static int ep = -1;
static int port_cursor;
static uint64_t rto_ns = RTO_NS;

// The run in progress.
// DELETE: Refresh(0) on every allocation open kept (the allocations scenario's rounds).
enum mode { IDLE, OPEN, CHURN, DELETE };
static enum mode mode = IDLE;
static struct slot slots[MAX_CONCURRENCY];
static int nslots;
static struct cred *creds;
static size_t ncreds;
static char prefix[64];
static int bind_channel;
static int delete_after; // open ... DELETE: each setup deletes its allocation (Refresh 0)
static struct sockaddr_in peer;
static uint32_t count, next_index, per_worker;
static uint64_t done, failed, t_start, t_bound, t_hard, next_progress, cpu_start;
static char first_error[256];
static int *live; // allocations' sockets kept open
static uint32_t *live_index; // each one's setup index: its user, for the delete's credential
static size_t nlive, live_cap;
static uint64_t rng;

static uint64_t cpu_micros(void) {
  struct rusage r;
  getrusage(RUSAGE_SELF, &r);
  return (uint64_t)(r.ru_utime.tv_sec + r.ru_stime.tv_sec) * 1000000ull +
         (uint64_t)(r.ru_utime.tv_usec + r.ru_stime.tv_usec);
}

/** Transaction ids need only be unique here (RFC 8489 §6: 96 random bits): xorshift64*. */
static uint64_t random64(void) {
  rng ^= rng >> 12, rng ^= rng << 25, rng ^= rng >> 27;
  return rng * 0x2545f4914f6cdd1dull;
}

static void put16(uint8_t *p, uint16_t v) { p[0] = (uint8_t)(v >> 8), p[1] = (uint8_t)v; }
static void put32(uint8_t *p, uint32_t v) {
  p[0] = (uint8_t)(v >> 24), p[1] = (uint8_t)(v >> 16), p[2] = (uint8_t)(v >> 8), p[3] = (uint8_t)v;
}
static uint16_t get16(const uint8_t *p) { return (uint16_t)(p[0] << 8 | p[1]); }
static uint32_t get32(const uint8_t *p) {
  return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

/** TURN REST credentials for `user`, valid for a day (as the JavaScript client mints them). */
static void mint(struct cred *c, const char *user) {
  long expiry = (long)time(NULL) + 86400;
  snprintf(c->username, sizeof c->username, "%ld:%s", expiry, user);
  uint8_t mac[20];
  hmac_sha1(secret, strlen(secret), c->username, strlen(c->username), mac);
  base64_encode(mac, 20, c->password);
  c->keyed = 0;
}

/** RFC 8489 §9.2.2: key = MD5(username ":" realm ":" password), once per user and realm. */
static const uint8_t *long_term_key(struct cred *c, const char *realm) {
  if (!c->keyed || strcmp(c->realm, realm) != 0) {
    snprintf(c->realm, sizeof c->realm, "%s", realm);
    struct md5 m;
    md5_init(&m);
    md5_update(&m, c->username, strlen(c->username));
    md5_update(&m, ":", 1);
    md5_update(&m, c->realm, strlen(c->realm));
    md5_update(&m, ":", 1);
    md5_update(&m, c->password, strlen(c->password));
    md5_final(&m, c->key);
    c->keyed = 1;
  }
  return c->key;
}

static size_t put_attr(uint8_t *m, size_t off, uint16_t type, const void *v, size_t len) {
  put16(m + off, type);
  put16(m + off + 2, (uint16_t)len);
  memcpy(m + off + 4, v, len);
  size_t padded = (len + 3) & ~(size_t)3;
  memset(m + off + 4 + len, 0, padded - len);
  return off + 4 + padded;
}

/** RFC 8489 §14.2 / RFC 8656 §18: an XOR-mapped IPv4 address. */
static void xor_address(uint8_t v[8], const struct sockaddr_in *a) {
  v[0] = 0, v[1] = 0x01;
  put16(v + 2, (uint16_t)(ntohs(a->sin_port) ^ (MAGIC >> 16)));
  put32(v + 4, ntohl(a->sin_addr.s_addr) ^ MAGIC);
}

static uint16_t method_of(enum step s) {
  switch (s) {
  case S_ALLOCATE: return M_ALLOCATE;
  case S_PERMISSION: return M_CREATE_PERMISSION;
  case S_CHANNEL: return M_CHANNEL_BIND;
  default: return M_REFRESH;
  }
}

static const char *method_name(enum step s) {
  switch (s) {
  case S_ALLOCATE: return "Allocate";
  case S_PERMISSION: return "CreatePermission";
  case S_CHANNEL: return "ChannelBind";
  default: return "Refresh";
  }
}

/** The current step's request with a new transaction id, sent; retransmissions resend it. */
static void send_request(struct slot *s, uint64_t now) {
  uint8_t *m = s->msg, v[8];
  uint16_t method = method_of(s->step);
  // RFC 8489 §5: the method's bits around the class bits (a request: both 0).
  put16(m, (uint16_t)((method & 0x000f) | (method & 0x0070) << 1 | (method & 0x0f80) << 2));
  put32(m + 4, MAGIC);
  uint64_t a = random64(), b = random64();
  memcpy(s->tx, &a, 8);
  memcpy(s->tx + 8, &b, 4);
  memcpy(m + 8, s->tx, 12);
  size_t off = 20;
  switch (s->step) {
  case S_ALLOCATE:
    put32(v, 17u << 24); // REQUESTED-TRANSPORT: UDP (17), RFFU after
    off = put_attr(m, off, A_REQUESTED_TRANSPORT, v, 4);
    put32(v, 600);
    off = put_attr(m, off, A_LIFETIME, v, 4);
    break;
  case S_PERMISSION:
    xor_address(v, &peer);
    off = put_attr(m, off, A_XOR_PEER_ADDRESS, v, 8);
    break;
  case S_CHANNEL:
    // RFC 8656 §12: channel numbers 0x4000-0x4FFF, as setup.ts numbers them.
    put32(v, (uint32_t)(0x4000 + s->index % 0x1000) << 16);
    off = put_attr(m, off, A_CHANNEL_NUMBER, v, 4);
    xor_address(v, &peer);
    off = put_attr(m, off, A_XOR_PEER_ADDRESS, v, 8);
    break;
  case S_REFRESH:
  case S_DELETE:
    put32(v, s->step == S_REFRESH ? 600 : 0);
    off = put_attr(m, off, A_LIFETIME, v, 4);
    break;
  case S_DONE: return;
  }
  if (s->authed) {
    off = put_attr(m, off, A_USERNAME, s->cred->username, strlen(s->cred->username));
    off = put_attr(m, off, A_REALM, s->realm, strlen(s->realm));
    off = put_attr(m, off, A_NONCE, s->nonce, s->nonce_len);
    // RFC 8489 §14.5: the length covers MESSAGE-INTEGRITY itself, not FINGERPRINT after it.
    put16(m + 2, (uint16_t)(off - 20 + 24));
    uint8_t mac[20];
    const uint8_t *key = long_term_key(s->cred, s->realm);
    hmac_sha1(key, 16, m, off, mac);
    off = put_attr(m, off, A_MESSAGE_INTEGRITY, mac, 20);
  }
  put16(m + 2, (uint16_t)(off - 20 + 8));
  put32(v, crc32_of(m, off) ^ 0x5354554eu); // RFC 8489 §14.7
  off = put_attr(m, off, A_FINGERPRINT, v, 4);
  s->msg_len = off;
  s->transmits = 0;
  (void)now;
}

static void transmit(struct slot *s, uint64_t now) {
  // A refused send (ICMP error queued on the socket) counts as a send: the timer resends.
  send(s->fd, s->msg, s->msg_len, MSG_DONTWAIT);
  s->wake = now + (rto_ns << s->transmits);
  s->transmits++;
}

static void set_first_error(const char *fmt, ...) {
  if (first_error[0]) return;
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(first_error, sizeof first_error, fmt, ap);
  va_end(ap);
}

/** A connected UDP socket on a low local port, on the epoll as `slot`; -1 when none is free. */
static int open_socket(int slot) {
  int fd = socket(AF_INET, SOCK_DGRAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (fd < 0) {
    set_first_error("socket: %s", strerror(errno));
    return -1;
  }
  struct sockaddr_in local = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
  int bound = 0;
  for (int i = 0; i < BIND_ATTEMPTS && !bound; i++) {
    local.sin_port = htons((uint16_t)port_cursor);
    port_cursor = port_cursor + 1 >= PORT_LAST ? PORT_FIRST : port_cursor + 1;
    bound = bind(fd, (struct sockaddr *)&local, sizeof local) == 0;
  }
  if (!bound) {
    set_first_error("no free local UDP port for the generator");
    close(fd);
    return -1;
  }
  if (connect(fd, (struct sockaddr *)&server, sizeof server) < 0) {
    set_first_error("connect: %s", strerror(errno));
    close(fd);
    return -1;
  }
  struct epoll_event ev = {.events = EPOLLIN, .data.u64 = (uint64_t)slot + 1};
  epoll_ctl(ep, EPOLL_CTL_ADD, fd, &ev);
  return fd;
}

static struct cred *cred_for(uint32_t i) { return &creds[i % ncreds]; }

/**
 * Starts a setup (open) or a cycle (churn) on an idle slot; in DELETE, the Refresh(0) of live
 * allocation `index` (a position in `live`) on its own socket.
 */
static int start(int i, uint32_t index, uint64_t now) {
  struct slot *s = &slots[i];
  if (mode == DELETE) {
    int fd = live[index];
    live[index] = -1;
    struct epoll_event ev = {.events = EPOLLIN, .data.u64 = (uint64_t)i + 1};
    if (epoll_ctl(ep, EPOLL_CTL_ADD, fd, &ev) < 0) {
      set_first_error("epoll_ctl: %s", strerror(errno));
      close(fd);
      return -1;
    }
    // The same user as its setup (RFC 8656 §7: a Refresh carries the allocation's credential);
    // the first request goes without one and learns the nonce from its 401, as a setup's does.
    *s = (struct slot){.fd = fd, .step = S_DELETE, .index = live_index[index]};
    s->cred = cred_for(s->index % 1000);
    send_request(s, now);
    transmit(s, now);
    return 0;
  }
  int fd = open_socket(i);
  if (fd < 0) return -1;
  *s = (struct slot){.fd = fd, .step = S_ALLOCATE, .index = index, .cycles = s->cycles};
  // open: users spread as setup.ts spreads them (PREFIX + index % 1000); churn: one per worker.
  s->cred = cred_for(mode == OPEN ? index % 1000 : index);
  send_request(s, now);
  transmit(s, now);
  return 0;
}

static void release(struct slot *s, int keep) {
  if (keep) {
    epoll_ctl(ep, EPOLL_CTL_DEL, s->fd, NULL);
    if (nlive == live_cap) {
      live_cap = live_cap ? live_cap * 2 : 1024;
      live = realloc(live, live_cap * sizeof *live);
      live_index = realloc(live_index, live_cap * sizeof *live_index);
      if (!live || !live_index) exit(1);
    }
    live_index[nlive] = s->index;
    live[nlive++] = s->fd;
  } else {
    close(s->fd);
  }
  s->fd = -1;
}

static void fail(struct slot *s, uint64_t now, const char *fmt, ...) {
  if (!first_error[0]) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(first_error, sizeof first_error, fmt, ap);
    va_end(ap);
  }
  failed++;
  release(s, 0);
  if (mode == CHURN) {
    s->paused = 1;
    s->wake = now + CHURN_PAUSE_NS;
  }
}

/** The next setup or cycle for an idle slot, if the run wants one. */
static void refill(int i, uint64_t now) {
  struct slot *s = &slots[i];
  if (s->fd >= 0 || s->paused) return;
  if (mode == OPEN || mode == DELETE) {
    while (next_index < count && now < t_bound) {
      if (start(i, next_index++, now) == 0) return;
      failed++;
    }
  } else if (mode == CHURN) {
    if (now >= t_bound || (per_worker > 0 && s->cycles >= per_worker)) return;
    if (start(i, (uint32_t)i, now) < 0) {
      failed++;
      s->paused = 1;
      s->wake = now + CHURN_PAUSE_NS;
    }
  }
}

static void step_done(struct slot *s, uint64_t now) {
  enum step next = S_DONE;
  if (s->step == S_ALLOCATE)
    next = mode == CHURN      ? S_REFRESH
           : bind_channel     ? S_PERMISSION
           : delete_after     ? S_DELETE
                              : S_DONE;
  else if (s->step == S_PERMISSION) next = S_CHANNEL;
  else if (s->step == S_CHANNEL && delete_after) next = S_DELETE;
  else if (s->step == S_REFRESH) next = S_DELETE;
  if (next == S_DONE) {
    done++;
    s->cycles++;
    release(s, mode == OPEN && !delete_after);
    return;
  }
  s->step = next;
  s->attempt = 0;
  send_request(s, now);
  transmit(s, now);
}

/** A datagram on a slot's socket: the answer to its request, or ignored. */
static void on_response(struct slot *s, const uint8_t *b, size_t n, uint64_t now) {
  if (n < 20 || (b[0] & 0xc0) != 0 || get32(b + 4) != MAGIC) return;
  size_t len = get16(b + 2);
  if (20 + len > n || (len & 3) != 0 || memcmp(b + 8, s->tx, 12) != 0) return;
  uint16_t cls = get16(b) & 0x0110;
  const uint8_t *realm = NULL, *nonce = NULL, *error = NULL, *relayed = NULL;
  size_t realm_len = 0, nonce_len = 0, error_len = 0, relayed_len = 0;
  for (size_t off = 20; off + 4 <= 20 + len;) {
    uint16_t t = get16(b + off), l = get16(b + off + 2);
    if (off + 4 + l > 20 + len) return;
    const uint8_t *v = b + off + 4;
    if (t == A_REALM && !realm) realm = v, realm_len = l;
    else if (t == A_NONCE && !nonce) nonce = v, nonce_len = l;
    else if (t == A_ERROR_CODE && !error) error = v, error_len = l;
    else if (t == A_XOR_RELAYED_ADDRESS && !relayed) relayed = v, relayed_len = l;
    off += 4 + (((size_t)l + 3) & ~(size_t)3);
  }
  if (cls == 0x0100) {
    if (s->step == S_ALLOCATE && (!relayed || relayed_len < 8 || relayed[1] != 0x01)) {
      fail(s, now, "Allocate success without XOR-RELAYED-ADDRESS");
      return;
    }
    step_done(s, now);
    return;
  }
  if (cls != 0x0110) return; // not a response
  int code = error && error_len >= 4 ? (error[2] & 7) * 100 + error[3] : -1;
  // RFC 8489 §9.2.4: 401 brings realm and nonce; 438 a fresh nonce (§9.2.5).
  if ((code == 401 || code == 438) && nonce && nonce_len <= sizeof s->nonce) {
    if ((code == 401 && s->authed && s->attempt > 0) || s->attempt + 1 >= MAX_AUTH_ATTEMPTS) {
      fail(s, now, "%s: authentication rejected", method_name(s->step));
      return;
    }
    s->attempt++;
    if (realm && realm_len < sizeof s->realm) {
      memcpy(s->realm, realm, realm_len);
      s->realm[realm_len] = '\0';
    }
    memcpy(s->nonce, nonce, nonce_len);
    s->nonce_len = nonce_len;
    s->authed = 1;
    send_request(s, now);
    transmit(s, now);
    return;
  }
  if (code < 0) fail(s, now, "%s failed with error ?", method_name(s->step));
  else fail(s, now, "%s failed with error %d", method_name(s->step), code);
}

static void receive(int i, uint64_t now) {
  struct slot *s = &slots[i];
  uint8_t buf[1500];
  while (s->fd >= 0) {
    ssize_t n = recv(s->fd, buf, sizeof buf, MSG_DONTWAIT);
    if (n < 0) {
      if (errno == EINTR) continue;
      return; // EAGAIN, or ECONNREFUSED from an ICMP error: the timer resends
    }
    on_response(s, buf, (size_t)n, now);
  }
}

/** Credentials for PREFIX0 .. PREFIX(n-1). */
static void mint_all(size_t n) {
  free(creds);
  creds = calloc(n ? n : 1, sizeof *creds);
  if (!creds) exit(1);
  ncreds = n ? n : 1;
  for (size_t i = 0; i < ncreds; i++) {
    char user[96];
    snprintf(user, sizeof user, "%s%zu", prefix, i);
    mint(&creds[i], user);
  }
}

static void begin(enum mode m, int slots_wanted, double bound_seconds) {
  mode = m;
  nslots = slots_wanted;
  done = failed = 0;
  first_error[0] = '\0';
  for (int i = 0; i < nslots; i++) slots[i] = (struct slot){.fd = -1};
  cpu_start = cpu_micros();
  t_start = mono_ns();
  t_bound = t_start + (uint64_t)(bound_seconds * 1e9);
  // After the bound, requests in flight get their whole retransmission schedule, and 3 s more.
  t_hard = t_bound + (rto_ns << MAX_TRANSMITS) + 3000000000ull;
  next_progress = t_start + PROGRESS_NS;
  for (int i = 0; i < nslots; i++) refill(i, t_start);
}

static void on_command(char *line) {
  char ip[INET_ADDRSTRLEN], peer_ip[INET_ADDRSTRLEN];
  int port, bind_flag;
  unsigned n, conc, per;
  int delete_flag = 0;
  double seconds;
  if (sscanf(line, "server %15s %d", ip, &port) == 2) {
    if (inet_pton(AF_INET, ip, &server.sin_addr) != 1) say("error bad server address: %s", ip);
    server.sin_port = htons((uint16_t)port);
  } else if (sscanf(line, "rto %u", &n) == 1 && n > 0) {
    rto_ns = (uint64_t)n * 1000000ull;
  } else if (strncmp(line, "secret ", 7) == 0) {
    snprintf(secret, sizeof secret, "%s", line + 7);
  } else if (mode != IDLE) {
    say("error busy: %s", line);
  } else if (sscanf(line, "open %u %u %63s %d %15s %d %lf %d", &n, &conc, prefix, &bind_flag,
                    peer_ip, &port, &seconds, &delete_flag) >= 7) {
    if (server.sin_port == 0 || inet_pton(AF_INET, peer_ip, &peer.sin_addr) != 1) {
      say("error open: no server, or a bad peer address");
      return;
    }
    peer.sin_family = AF_INET;
    peer.sin_port = htons((uint16_t)port);
    bind_channel = bind_flag;
    delete_after = delete_flag;
    count = n;
    next_index = 0;
    mint_all(n < 1000 ? n : 1000);
    if (conc < 1) conc = 1;
    if (conc > MAX_CONCURRENCY) conc = MAX_CONCURRENCY;
    begin(OPEN, (int)(conc < n ? conc : n), seconds);
  } else if (sscanf(line, "churn %u %lf %u %63s", &n, &seconds, &per, prefix) == 4) {
    if (server.sin_port == 0 || n < 1 || n > MAX_CONCURRENCY) {
      say("error churn: no server, or workers not in 1..%d", MAX_CONCURRENCY);
      return;
    }
    per_worker = per;
    mint_all(n);
    begin(CHURN, (int)n, seconds);
  } else if (sscanf(line, "delete %u %lf", &conc, &seconds) == 2) {
    // Refresh(0) for every allocation the last open kept, with that open's users (its creds).
    if (server.sin_port == 0) {
      say("error delete: no server");
      return;
    }
    count = (uint32_t)nlive;
    next_index = 0;
    if (conc < 1) conc = 1;
    if (conc > MAX_CONCURRENCY) conc = MAX_CONCURRENCY;
    if (count == 0) {
      say("deleted 0 0 0 0 ");
      return;
    }
    begin(DELETE, (int)(conc < count ? conc : count), seconds);
  } else if (strcmp(line, "close") == 0) {
    for (size_t i = 0; i < nlive; i++) close(live[i]);
    say("closed %zu", nlive);
    nlive = 0;
  } else if (strcmp(line, "quit") == 0) {
    exit(0);
  } else {
    say("error unknown command: %s", line);
  }
}

/** Ends the run when nothing is in flight and nothing more is due; says how it went. */
static void maybe_finish(uint64_t now) {
  for (int i = 0; i < nslots; i++) {
    if (slots[i].fd >= 0) return;
    if (mode == CHURN && slots[i].paused && now < t_bound) return;
  }
  if ((mode == OPEN || mode == DELETE) && next_index < count && now < t_bound) return;
  double el = (double)(now - t_start) / 1e9;
  unsigned long long cpu = (unsigned long long)(cpu_micros() - cpu_start);
  if (mode == OPEN) {
    if (next_index < count) set_first_error("%u setups not started: the bound ended the run",
                                            count - next_index);
    failed += count - next_index;
    say("opened %llu %llu %.6f %llu %zu %s", (unsigned long long)done, (unsigned long long)failed,
        el, cpu, nlive, first_error);
  } else if (mode == DELETE) {
    // Sockets the bound left unvisited are closed (their allocations expire at the relay).
    for (uint32_t k = next_index; k < count; k++) close(live[k]);
    failed += count - next_index;
    nlive = 0;
    say("deleted %llu %llu %.6f %llu %s", (unsigned long long)done, (unsigned long long)failed,
        el, cpu, first_error);
  } else {
    say("churned %llu %llu %.6f %llu %s", (unsigned long long)done, (unsigned long long)failed, el,
        cpu, first_error);
  }
  mode = IDLE;
}

/** Retransmissions due, paused churn workers to restart, the hard bound. */
static void on_timers(uint64_t now) {
  for (int i = 0; i < nslots; i++) {
    struct slot *s = &slots[i];
    if (s->fd >= 0 && now >= t_hard) {
      fail(s, now, "%s: no answer by the run's bound", method_name(s->step));
      s->paused = 0;
    } else if (s->fd >= 0 && now >= s->wake) {
      if (s->transmits >= MAX_TRANSMITS) {
        fail(s, now, "request timed out");
        if (mode == OPEN || mode == DELETE) refill(i, now);
      } else {
        transmit(s, now);
      }
    } else if (s->fd < 0 && s->paused && now >= s->wake) {
      s->paused = 0;
      refill(i, now);
    }
  }
}

static int selftest(void);

int main(int argc, char **argv) {
  if (argc == 2 && strcmp(argv[1], "selftest") == 0) return selftest();
  if (argc != 1) {
    fprintf(stderr, "usage: turnpike-setupgen [selftest]  (commands on stdin)\n");
    return 2;
  }
  die_with_parent();
  // One descriptor per live allocation: as many as the hard limit allows.
  struct rlimit nofile;
  if (getrlimit(RLIMIT_NOFILE, &nofile) == 0 && nofile.rlim_cur < nofile.rlim_max) {
    nofile.rlim_cur = nofile.rlim_max;
    setrlimit(RLIMIT_NOFILE, &nofile);
  }
  if (getrandom(&rng, sizeof rng, 0) != sizeof rng || rng == 0) rng = mono_ns() | 1;
  port_cursor = PORT_FIRST + (int)(random64() % 4000);
  ep = epoll_create1(EPOLL_CLOEXEC);
  struct epoll_event in = {.events = EPOLLIN, .data.u64 = 0};
  if (ep < 0 || epoll_ctl(ep, EPOLL_CTL_ADD, 0, &in) < 0) {
    perror("epoll");
    return 1;
  }
  static struct lines commands;
  struct epoll_event evs[BATCH];
  for (;;) {
    struct timespec wait, *timeout = NULL;
    if (mode != IDLE) {
      uint64_t now = mono_ns(), at = next_progress < t_hard ? next_progress : t_hard;
      for (int i = 0; i < nslots; i++)
        if ((slots[i].fd >= 0 || slots[i].paused) && slots[i].wake < at) at = slots[i].wake;
      uint64_t d = at > now ? at - now : 0;
      wait = (struct timespec){(time_t)(d / 1000000000ull), (long)(d % 1000000000ull)};
      timeout = &wait;
    }
    int n = epoll_pwait2(ep, evs, BATCH, timeout, NULL);
    uint64_t now = mono_ns();
    for (int i = 0; i < n; i++) {
      uint64_t id = evs[i].data.u64;
      if (id == 0) {
        if (!read_lines(&commands, on_command)) return 0;
      } else if (mode != IDLE && (int)id <= nslots) {
        receive((int)id - 1, now);
        refill((int)id - 1, now);
      }
    }
    if (mode == IDLE) continue;
    on_timers(now);
    if (now >= next_progress) {
      say("progress %llu %llu", (unsigned long long)done, (unsigned long long)failed);
      next_progress = now + PROGRESS_NS;
    }
    maybe_finish(now);
  }
}

// ---- selftest: digest.h against the RFCs' vectors ----

static int failures;

static void check(const char *name, const uint8_t *got, size_t n, const char *hex) {
  char out[2 * 64 + 1];
  for (size_t i = 0; i < n; i++) snprintf(out + 2 * i, 3, "%02x", got[i]);
  int ok = strcmp(out, hex) == 0;
  if (!ok) failures++;
  printf("%s %s %s\n", ok ? "ok" : "FAIL", name, out);
}

static void sha1_of(const void *p, size_t n, size_t repeat, uint8_t out[20]) {
  struct sha1 s;
  sha1_init(&s);
  for (size_t i = 0; i < repeat; i++) sha1_update(&s, p, n);
  sha1_final(&s, out);
}

static int selftest(void) {
  uint8_t d[20], k[80], data[80];
  // RFC 3174 §7.3: TEST1 .. TEST4.
  sha1_of("abc", 3, 1, d);
  check("sha1-test1", d, 20, "a9993e364706816aba3e25717850c26c9cd0d89d");
  const char *t2 = "abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq";
  sha1_of(t2, strlen(t2), 1, d);
  check("sha1-test2", d, 20, "84983e441c3bd26ebaae4aa1f95129e5e54670f1");
  sha1_of("a", 1, 1000000, d);
  check("sha1-test3", d, 20, "34aa973cd4c4daa4f61eeb2bdbad27316534016f");
  const char *t4 = "0123456701234567012345670123456701234567012345670123456701234567";
  sha1_of(t4, strlen(t4), 10, d);
  check("sha1-test4", d, 20, "dea356a2cddd90c7a7ecedc5ebb563934f460452");
  // RFC 1321 appendix A.5: the test suite.
  static const char *md5_in[] = {"", "a", "abc", "message digest", "abcdefghijklmnopqrstuvwxyz",
                                 "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789",
                                 "1234567890123456789012345678901234567890123456789012345678901234"
                                 "5678901234567890"};
  static const char *md5_out[] = {
      "d41d8cd98f00b204e9800998ecf8427e", "0cc175b9c0f1b6a831c399e269772661",
      "900150983cd24fb0d6963f7d28e17f72", "f96b697d7cb7938d525a2f31aaf161d0",
      "c3fcd3d76192e4007dfb496cca67e13b", "d174ab98d277d9f5a5611c2c9f419d9f",
      "57edf4a22be3c955ac49da2e2107b67a"};
  for (int i = 0; i < 7; i++) {
    struct md5 m;
    md5_init(&m);
    md5_update(&m, md5_in[i], strlen(md5_in[i]));
    md5_final(&m, d);
    char name[16];
    snprintf(name, sizeof name, "md5-%d", i + 1);
    check(name, d, 16, md5_out[i]);
  }
  // RFC 2202 §3: HMAC-SHA1 test cases 1-7.
  memset(k, 0x0b, 20);
  hmac_sha1(k, 20, "Hi There", 8, d);
  check("hmac-sha1-1", d, 20, "b617318655057264e28bc0b6fb378c8ef146be00");
  hmac_sha1("Jefe", 4, "what do ya want for nothing?", 28, d);
  check("hmac-sha1-2", d, 20, "effcdf6ae5eb2fa2d27416d5f184df9c259a7c79");
  memset(k, 0xaa, 20);
  memset(data, 0xdd, 50);
  hmac_sha1(k, 20, data, 50, d);
  check("hmac-sha1-3", d, 20, "125d7342b9ac11cd91a39af48aa17b4f63f175d3");
  for (int i = 0; i < 25; i++) k[i] = (uint8_t)(i + 1);
  memset(data, 0xcd, 50);
  hmac_sha1(k, 25, data, 50, d);
  check("hmac-sha1-4", d, 20, "4c9007f4026250c6bc8414f9bf50c86c2d7235da");
  memset(k, 0x0c, 20);
  hmac_sha1(k, 20, "Test With Truncation", 20, d);
  check("hmac-sha1-5", d, 20, "4c1a03424b55e07fe7f27be1d58bb9324a9a5a04");
  memset(k, 0xaa, 80);
  const char *t6 = "Test Using Larger Than Block-Size Key - Hash Key First";
  hmac_sha1(k, 80, t6, strlen(t6), d);
  check("hmac-sha1-6", d, 20, "aa4ae5e15272d00e95705637ce8a3b55ed402112");
  const char *t7 = "Test Using Larger Than Block-Size Key and Larger Than One Block-Size Data";
  hmac_sha1(k, 80, t7, strlen(t7), d);
  check("hmac-sha1-7", d, 20, "e8e99d0f45237d786d6bbaa7965c7808bbff1a91");
  // RFC 4648 §10: base64 test vectors.
  static const char *b64_in[] = {"", "f", "fo", "foo", "foob", "fooba", "foobar"};
  static const char *b64_out[] = {"", "Zg==", "Zm8=", "Zm9v", "Zm9vYg==", "Zm9vYmE=", "Zm9vYmFy"};
  for (int i = 0; i < 7; i++) {
    char out[16];
    base64_encode((const uint8_t *)b64_in[i], strlen(b64_in[i]), out);
    int ok = strcmp(out, b64_out[i]) == 0;
    if (!ok) failures++;
    printf("%s base64-%d %s\n", ok ? "ok" : "FAIL", i + 1, out);
  }
  // The CRC-32 check value ("123456789" -> cbf43926) of the reflected 0xEDB88320 polynomial.
  uint32_t crc = crc32_of((const uint8_t *)"123456789", 9);
  uint8_t c[4] = {(uint8_t)(crc >> 24), (uint8_t)(crc >> 16), (uint8_t)(crc >> 8), (uint8_t)crc};
  check("crc32", c, 4, "cbf43926");
  printf("%s %d\n", failures ? "failed" : "passed", failures);
  return failures ? 1 : 0;
}
