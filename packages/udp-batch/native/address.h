// Socket addresses as the layout's words (RX_ADDR / TX_ADDR): JavaScript sees an IPv4 address
// as one uint32 and an IPv6 address as four big-endian words, never a string or an object.
// Inline: both run once per packet, on the receive and the transmit path.
#ifndef UDP_BATCH_ADDRESS_H
#define UDP_BATCH_ADDRESS_H

#include <arpa/inet.h>
#include <string.h>

#include "udp_batch.h"

/** `ss` (from recvmmsg or getsockname) into address words, port and family (4, 6 | RX_SCOPED). */
static inline void write_words(const struct sockaddr_storage* ss, uint32_t* words, uint32_t* port,
                               uint32_t* family) {
  if (ss->ss_family == AF_INET) {
    const struct sockaddr_in* a = (const struct sockaddr_in*)ss;
    *family = 4;
    *port = ntohs(a->sin_port);
    words[0] = ntohl(a->sin_addr.s_addr);
    words[1] = words[2] = words[3] = 0;
  } else {
    const struct sockaddr_in6* a = (const struct sockaddr_in6*)ss;
    *family = a->sin6_scope_id != 0 ? (6 | RX_SCOPED) : 6;
    *port = ntohs(a->sin6_port);
    for (int i = 0; i < 4; i++) {
      uint32_t w;
      memcpy(&w, &a->sin6_addr.s6_addr[i * 4], 4);
      words[i] = ntohl(w);
    }
  }
}

/** Address words, port and family (4 or 6) of a tx entry into `ss`; returns its length. */
static inline socklen_t read_words(struct sockaddr_storage* ss, uint32_t family,
                                   const uint32_t* words, uint32_t port) {
  memset(ss, 0, sizeof(struct sockaddr_in6));
  if (family == 4) {
    struct sockaddr_in* a = (struct sockaddr_in*)ss;
    a->sin_family = AF_INET;
    a->sin_port = htons((uint16_t)port);
    a->sin_addr.s_addr = htonl(words[0]);
    return sizeof(struct sockaddr_in);
  }
  struct sockaddr_in6* a = (struct sockaddr_in6*)ss;
  a->sin6_family = AF_INET6;
  a->sin6_port = htons((uint16_t)port);
  for (int i = 0; i < 4; i++) {
    uint32_t w = htonl(words[i]);
    memcpy(&a->sin6_addr.s6_addr[i * 4], &w, 4);
  }
  return sizeof(struct sockaddr_in6);
}

#endif
