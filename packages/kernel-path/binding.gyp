{
  "targets": [
    {
      "target_name": "kernel_path",
      "sources": [
        "native/addon.c",
        "native/bindings.c",
        "native/buckets.c",
        "native/errors.c",
        "native/layout.c",
        "native/loader.c",
        "native/registry.c"
      ],
      "cflags": ["-O2", "-Wall", "-Wextra", "-Wno-unused-parameter", "-std=gnu11", "-fvisibility=hidden"],
      "libraries": ["-lbpf"],
      "conditions": [["OS!='linux'", {"type": "none"}]]
    }
  ]
}
