{
  "targets": [
    {
      "target_name": "udp_batch",
      "sources": [
        "native/addon.c",
        "native/context.c",
        "native/fd_helpers.c",
        "native/layout.c",
        "native/receive.c",
        "native/socket_pool.c",
        "native/sockets.c",
        "native/splice_pipe.c",
        "native/transmit.c"
      ],
      "defines": [],
      "cflags": [
        "-O2",
        "-Wall",
        "-Wextra",
        "-Wno-unused-parameter",
        "-std=gnu11",
        "-fvisibility=hidden"
      ],
      "conditions": [["OS!='linux'", {"type": "none"}]]
    }
  ]
}
