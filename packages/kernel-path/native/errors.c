// Why a load or an attach failed, in one line for an operator (KernelPathError's message; the
// relay logs it once and relays in userspace). libbpf prints its messages through a callback;
// they are kept only while this module loads an object (loader.c), in a buffer of the loading
// thread, and the verifier's reason or libbpf's first error is picked out of them.
// TURNPIKE_KERNEL_PATH_LOG=1 prints the whole log when a load fails.
#include "kernel_path.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define LOG_CAPACITY (64 * 1024)

// ---- libbpf's messages, kept while loading so a failure can say why ----------------------

static __thread char *log_buf;
static __thread size_t log_len;

int libbpf_log_start(void) {
  log_buf = calloc(1, LOG_CAPACITY);
  log_len = 0;
  return log_buf ? 0 : -1;
}

void libbpf_log_stop(void) {
  free(log_buf);
  log_buf = NULL;
}

int libbpf_log_print(enum libbpf_print_level level, const char *fmt, va_list args) {
  if (!log_buf || level == LIBBPF_DEBUG) return 0;
  // Keep the last LOG_CAPACITY - 1 bytes: the verifier's reason is at the end of its log,
  // which libbpf hands over in one piece however long it is.
  char *msg = NULL;
  int n = vasprintf(&msg, fmt, args);
  if (n <= 0 || !msg) return 0;
  size_t len = (size_t)n, cap = LOG_CAPACITY - 1;
  const char *src = msg;
  if (len > cap) src += len - cap, len = cap;
  if (log_len + len > cap) {
    size_t drop = log_len + len - cap;
    memmove(log_buf, log_buf + drop, log_len - drop);
    log_len -= drop;
  }
  memcpy(log_buf + log_len, src, len);
  log_len += len;
  log_buf[log_len] = 0;
  free(msg);
  return 0;
}

// ---- reasons --------------------------------------------------------------------------------

// The verifier's reason: the last line of the program's load log that is not its statistics.
static void verifier_reason(const char *log, char *out, size_t cap) {
  const char *end = NULL;
  for (const char *p = strstr(log, "-- END PROG LOAD LOG --"); p; p = strstr(p + 1, "-- END PROG LOAD LOG --"))
    end = p;
  out[0] = 0;
  while (end && end > log) {
    const char *line_end = end - 1; // the newline before `end`
    const char *start = line_end;
    while (start > log && start[-1] != '\n') start--;
    size_t len = (size_t)(line_end - start);
    if (len > 0 && strncmp(start, "processed ", 10) != 0 &&
        strncmp(start, "verification time", 17) != 0 && strncmp(start, "stack depth", 11) != 0 &&
        strncmp(start, "max_states_per_insn", 19) != 0) {
      snprintf(out, cap, "%.*s", (int)(len < 300 ? len : 300), start);
      return;
    }
    end = start;
  }
}

// The first line libbpf printed that says what failed (for failures before the verifier).
static void libbpf_reason(const char *log, char *out, size_t cap) {
  out[0] = 0;
  const char *line = log;
  while (line && *line) {
    const char *nl = strchr(line, '\n');
    size_t len = nl ? (size_t)(nl - line) : strlen(line);
    if (strstr(line, "failed") || strstr(line, "error") || strstr(line, "Error")) {
      if (strncmp(line, "libbpf: ", 8) == 0) line += 8, len -= 8;
      snprintf(out, cap, "%.*s", (int)(len < 300 ? len : 300), line);
      return;
    }
    line = nl ? nl + 1 : NULL;
  }
}

void load_failure(int err, char *why, size_t cap) {
  const char *log = log_buf ? log_buf : "";
  if (getenv("TURNPIKE_KERNEL_PATH_LOG")) fputs(log, stderr);
  char line[400];
  verifier_reason(log, line, sizeof(line));
  if (line[0]) {
    snprintf(why, cap, "the kernel's verifier rejected the program: %s", line);
  } else {
    libbpf_reason(log, line, sizeof(line));
    snprintf(why, cap, "loading the BPF object failed: %s", line[0] ? line : strerror(-err));
  }
}

void attach_failure(bool xdp, const char *name, int err, char *why, size_t cap) {
  if (xdp && (err == EOPNOTSUPP || err == EINVAL))
    snprintf(why, cap, "%s has no native XDP support (%s)", name, strerror(err));
  else if (!xdp && err == EINVAL)
    tcx_failure(err, why, cap);
  else
    snprintf(why, cap, "attaching to %s failed: %s", name, strerror(err));
}

void tcx_failure(int err, char *why, size_t cap) {
  if (err == EINVAL)
    snprintf(why, cap, "the kernel has no TCX attach point (BPF links for TC need Linux 6.6)");
  else
    snprintf(why, cap, "querying the TCX attach point failed: %s", strerror(err));
}
