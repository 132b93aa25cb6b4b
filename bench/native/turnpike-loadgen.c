// turnpike-loadgen: the bench's native load generator (bench/README.md, "The generator").
//
// One connected UDP socket per allocation: the bench did the TURN setup (Allocate with its 401
// round trip, CreatePermission, ChannelBind) from the same local ports and hands the tuples
// over, so the relay sees the same 5-tuples. The generator paces datagrams over the sockets in
// turn at the offered rate, stamps each payload with (phase, sequence, send time), and counts
// the echoes of the phase and their round trips in a histogram. Per packet: one send(2) (each
// socket is its own 5-tuple, so consecutive packets never share a sendmmsg) and a share of a
// recvmmsg(2) batch; no allocation, no formatting.
//
// While sending it wakes once per pacing tick (250 µs), not per echo: it sends what is due,
// then reads whatever echoes are ready. A round trip ends when the kernel queued the echo on
// the socket (SO_TIMESTAMPNS), not when the generator got round to reading it, so reading late
// costs no accuracy; send stamps use the same clock (CLOCK_REALTIME).
//
// argv[1]: "channel" = ChannelData (RFC 8656 §12.4) with the tuple's channel number in front of
// the payload; "raw" = the payload alone (no relay: straight to the echo peer).
//
// The bench talks to it on stdin/stdout, one line each:
//   tuple LOCALIP LOCALPORT REMOTEIP REMOTEPORT CHANNEL   (once per allocation)
//   open                         -> ready PID N          | error MESSAGE
//   run PHASE RATE SECONDS SIZE  -> progress SLOT RECEIVED every 250 ms while sending, then
//                                   sent SENT DUE SENDERRORS SECONDS
//   count                        -> count RECEIVED       (echoes of the phase so far)
//   finish                       -> hist COUNT MAXUS V:C V:C ...  (later echoes do not count)
//   quit, or stdin closed        -> exit 0
#include "common.h" // first: it defines _GNU_SOURCE

#include <math.h>
#include <sys/epoll.h>

#define PAYLOAD_HEADER 16 // u32 phase, u32 sequence, u64 send time (ns, CLOCK_REALTIME)
#define MAX_PAYLOAD 65507
/** Only the front of an echo is read: the header and the payload's stamp. */
#define RX_SLOT 128
/** A sending loop wakes this often: bursts of rate x 250 µs, and echoes read in batches. */
#define PACING_TICK_NS 250000ull
#define PROGRESS_NS 250000000ull
#define SOCKET_BUFFER (1 << 20)

// Round trips in µs: exact below 256, then 128 buckets per power of two (< 0.8 % error), up
// to 2^27 µs (134 s): HdrHistogram's layout, small enough to send as one line.
#define SUB_BITS 7
#define SUB_COUNT (1 << SUB_BITS)
#define MAX_EXP 27
#define BUCKETS (2 * SUB_COUNT + (MAX_EXP - SUB_BITS - 1) * SUB_COUNT)

struct tuple {
  int fd;
  char local_ip[INET_ADDRSTRLEN];
  int local_port;
  struct sockaddr_in remote;
  uint16_t channel;
};

static int channel_framing;
static struct tuple *tuples;
static size_t ntuples, tuples_cap;
static int ep = -1;

// The phase being measured.
static uint32_t phase;
static int phase_open, sending;
static uint64_t t0, total, slot, sent, send_errors, max_burst, next_progress;
static double rate;
static size_t payload_size;
static size_t rr;
static uint64_t received, hist_count, hist_max;
static uint64_t hist[BUCKETS];
static uint8_t tx[4 + MAX_PAYLOAD];

static struct mmsghdr rx[BATCH];
static struct iovec rx_iov[BATCH];
static uint8_t rx_buf[BATCH][RX_SLOT];
static union {
  struct cmsghdr align;
  char buf[CMSG_SPACE(sizeof(struct timespec))];
} rx_ctrl[BATCH];

/** The clock of the stamps: the one the kernel's receive timestamps (SO_TIMESTAMPNS) use. */
static inline uint64_t real_ns(void) {
  struct timespec ts;
  clock_gettime(CLOCK_REALTIME, &ts);
  return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

static size_t bucket_of(uint64_t us) {
  if (us < 2 * SUB_COUNT) return (size_t)us;
  int msb = 63 - __builtin_clzll(us);
  if (msb >= MAX_EXP) return BUCKETS - 1;
  int shift = msb - SUB_BITS;
  return (size_t)(2 * SUB_COUNT + (shift - 1) * SUB_COUNT) + (size_t)((us >> shift) - SUB_COUNT);
}

/** The middle of a bucket's range: what the bench records for each of its counts. */
static uint64_t bucket_value(size_t b) {
  if (b < 2 * SUB_COUNT) return b;
  size_t shift = (b - 2 * SUB_COUNT) / SUB_COUNT + 1;
  uint64_t low = ((uint64_t)((b - 2 * SUB_COUNT) % SUB_COUNT) + SUB_COUNT) << shift;
  return low + ((1ull << shift) >> 1);
}

static void record(uint64_t us) {
  if (us < 1) us = 1;
  hist[bucket_of(us)]++;
  hist_count++;
  if (us > hist_max) hist_max = us;
}

static void open_tuples(void) {
  for (size_t i = 0; i < ntuples; i++) {
    struct tuple *t = &tuples[i];
    t->fd = udp_bind(t->local_ip, t->local_port, SOCKET_BUFFER);
    if (t->fd < 0) {
      say("error bind %s:%d: %s", t->local_ip, t->local_port, strerror(-t->fd));
      exit(1);
    }
    if (connect(t->fd, (struct sockaddr *)&t->remote, sizeof t->remote) < 0) {
      say("error connect from %s:%d: %s", t->local_ip, t->local_port, strerror(errno));
      exit(1);
    }
    int on = 1;
    setsockopt(t->fd, SOL_SOCKET, SO_TIMESTAMPNS, &on, sizeof on);
    struct epoll_event ev = {.events = EPOLLIN, .data.u64 = i + 1};
    epoll_ctl(ep, EPOLL_CTL_ADD, t->fd, &ev);
  }
  say("ready %d %zu", (int)getpid(), ntuples);
}

static void start_phase(uint32_t p, double r, double seconds, size_t size) {
  phase = p;
  rate = r;
  payload_size = size < PAYLOAD_HEADER ? PAYLOAD_HEADER : size > MAX_PAYLOAD ? MAX_PAYLOAD : size;
  total = (uint64_t)llround(r * seconds);
  // A stalled round does not fire a second's worth at once: at most 20 ms of packets per round.
  max_burst = (uint64_t)ceil(r / 50);
  if (max_burst < 50) max_burst = 50;
  slot = sent = send_errors = received = hist_count = hist_max = 0;
  memset(hist, 0, sizeof hist);
  memset(tx, 0, sizeof tx);
  phase_open = 1;
  sending = total > 0;
  t0 = mono_ns();
  next_progress = t0 + PROGRESS_NS;
  if (!sending) say("sent 0 0 0 0");
}

/** Sends every packet due by now (at most max_burst); returns how many are still due. */
static uint64_t pace(uint64_t now) {
  uint64_t due = (uint64_t)((double)(now - t0) * rate / 1e9);
  if (due > total) due = total;
  uint64_t burst = due - slot < max_burst ? due - slot : max_burst;
  size_t head = channel_framing ? 4 : 0;
  size_t len = head + payload_size;
  if (channel_framing) {
    tx[2] = (uint8_t)(payload_size >> 8);
    tx[3] = (uint8_t)payload_size;
  }
  while (burst-- > 0) {
    struct tuple *t = &tuples[rr];
    if (channel_framing) {
      tx[0] = (uint8_t)(t->channel >> 8);
      tx[1] = (uint8_t)t->channel;
    }
    uint32_t seq = (uint32_t)slot;
    uint64_t stamp = real_ns();
    memcpy(tx + head, &phase, 4);
    memcpy(tx + head + 4, &seq, 4);
    memcpy(tx + head + 8, &stamp, 8);
    // Not offered when the kernel refuses it (a full buffer, an ICMP error on the socket).
    if (send(t->fd, tx, len, MSG_DONTWAIT) == (ssize_t)len) sent++;
    else send_errors++;
    slot++;
    rr = rr + 1 == ntuples ? 0 : rr + 1;
  }
  if (slot >= total) {
    sending = 0;
    say("sent %llu %llu %llu %.6f", (unsigned long long)sent, (unsigned long long)slot,
        (unsigned long long)send_errors, (double)(mono_ns() - t0) / 1e9);
  }
  return due - slot;
}

/** When the kernel queued a received datagram (SO_TIMESTAMPNS), or `fallback`. */
static uint64_t received_at(struct msghdr *m, uint64_t fallback) {
  for (struct cmsghdr *c = CMSG_FIRSTHDR(m); c; c = CMSG_NXTHDR(m, c)) {
    if (c->cmsg_level == SOL_SOCKET && c->cmsg_type == SCM_TIMESTAMPNS) {
      struct timespec ts;
      memcpy(&ts, CMSG_DATA(c), sizeof ts);
      return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
    }
  }
  return fallback;
}

static void receive(int fd) {
  for (int i = 0; i < BATCH; i++) rx[i].msg_hdr.msg_controllen = sizeof rx_ctrl[i];
  int n = recvmmsg(fd, rx, BATCH, MSG_DONTWAIT, NULL);
  if (n <= 0) return;
  uint64_t now = real_ns();
  size_t head = channel_framing ? 4 : 0;
  for (int i = 0; i < n; i++) {
    const uint8_t *b = rx_buf[i];
    // msg_len is the datagram's length even when only its front fit the slot (MSG_TRUNC).
    if (rx[i].msg_len < head + PAYLOAD_HEADER) continue;
    if (channel_framing && (b[0] & 0xc0) != 0x40) continue; // a STUN message, not ChannelData
    uint32_t p;
    uint64_t stamp;
    memcpy(&p, b + head, 4);
    memcpy(&stamp, b + head + 8, 8);
    if (!phase_open || p != phase) continue;
    received++;
    uint64_t at = received_at(&rx[i].msg_hdr, now);
    record(at > stamp ? (at - stamp) / 1000 : 1);
  }
}

static void finish_phase(void) {
  phase_open = 0;
  sending = 0;
  size_t cap = 64 + BUCKETS * 24;
  char *out = malloc(cap);
  if (!out) exit(1);
  size_t len = (size_t)snprintf(out, cap, "hist %llu %llu", (unsigned long long)hist_count,
                                (unsigned long long)hist_max);
  for (size_t b = 0; b < BUCKETS; b++) {
    if (hist[b] == 0) continue;
    len += (size_t)snprintf(out + len, cap - len, " %llu:%llu",
                            (unsigned long long)bucket_value(b), (unsigned long long)hist[b]);
  }
  out[len++] = '\n';
  say_all(out, len);
  free(out);
}

static void add_tuple(char *args) {
  struct tuple t = {.fd = -1, .remote = {.sin_family = AF_INET}};
  char remote_ip[INET_ADDRSTRLEN];
  int remote_port, channel;
  if (sscanf(args, "%15s %d %15s %d %d", t.local_ip, &t.local_port, remote_ip, &remote_port,
             &channel) != 5 ||
      inet_pton(AF_INET, remote_ip, &t.remote.sin_addr) != 1) {
    say("error bad tuple: %s", args);
    exit(1);
  }
  t.remote.sin_port = htons((uint16_t)remote_port);
  t.channel = (uint16_t)channel;
  if (ntuples == tuples_cap) {
    tuples_cap = tuples_cap ? tuples_cap * 2 : 256;
    tuples = realloc(tuples, tuples_cap * sizeof *tuples);
    if (!tuples) exit(1);
  }
  tuples[ntuples++] = t;
}

static void on_command(char *line) {
  unsigned p;
  double r, seconds;
  size_t size;
  if (strncmp(line, "tuple ", 6) == 0) add_tuple(line + 6);
  else if (strcmp(line, "open") == 0) open_tuples();
  else if (sscanf(line, "run %u %lf %lf %zu", &p, &r, &seconds, &size) == 4) {
    if (ntuples == 0 || tuples[0].fd < 0) say("error run before open");
    else start_phase(p, r, seconds, size);
  } else if (strcmp(line, "count") == 0) say("count %llu", (unsigned long long)received);
  else if (strcmp(line, "finish") == 0) finish_phase();
  else if (strcmp(line, "quit") == 0) exit(0);
  else say("error unknown command: %s", line);
}

int main(int argc, char **argv) {
  if (argc != 2 || (strcmp(argv[1], "channel") != 0 && strcmp(argv[1], "raw") != 0)) {
    fprintf(stderr, "usage: turnpike-loadgen channel|raw  (commands on stdin)\n");
    return 2;
  }
  die_with_parent();
  channel_framing = strcmp(argv[1], "channel") == 0;
  for (int i = 0; i < BATCH; i++) {
    rx_iov[i] = (struct iovec){.iov_base = rx_buf[i], .iov_len = RX_SLOT};
    rx[i].msg_hdr = (struct msghdr){
        .msg_iov = &rx_iov[i], .msg_iovlen = 1, .msg_control = rx_ctrl[i].buf};
  }
  ep = epoll_create1(EPOLL_CLOEXEC);
  struct epoll_event in = {.events = EPOLLIN, .data.u64 = 0};
  if (ep < 0 || epoll_ctl(ep, EPOLL_CTL_ADD, 0, &in) < 0) {
    perror("epoll");
    return 1;
  }
  static struct lines commands;
  struct epoll_event evs[BATCH];
  for (;;) {
    // Sending: a tick at a time (send what is due, read what echoes are ready, sleep to the next
    // tick). Otherwise: wait for the bench's next command or for echoes (the drain).
    uint64_t next_tick = 0;
    if (sending) {
      uint64_t now = mono_ns();
      uint64_t left = pace(now);
      if (sending && now >= next_progress) {
        say("progress %llu %llu", (unsigned long long)slot, (unsigned long long)received);
        next_progress = now + PROGRESS_NS;
      }
      // Still due (a catch-up burst was capped): no sleep before the next round.
      next_tick = left > 0 ? now : now + PACING_TICK_NS;
    }
    struct timespec zero = {0, 0};
    for (int round = 0; round < 8; round++) {
      int n = epoll_pwait2(ep, evs, BATCH, sending ? &zero : NULL, NULL);
      for (int i = 0; i < n; i++) {
        uint64_t id = evs[i].data.u64;
        if (id == 0) {
          if (!read_lines(&commands, on_command)) return 0;
        } else {
          receive(tuples[id - 1].fd);
        }
      }
      if (n < BATCH) break;
    }
    if (sending && next_tick > mono_ns()) {
      struct timespec at = {(time_t)(next_tick / 1000000000ull), (long)(next_tick % 1000000000ull)};
      clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &at, NULL);
    }
  }
}
