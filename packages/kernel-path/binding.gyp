{
  "targets": [
    {
      "target_name": "kernel_path",
      "sources": ["native/kernel_path.c"],
      "cflags": ["-O2", "-Wall", "-Wextra", "-Wno-unused-parameter", "-std=gnu11"],
      "libraries": ["-lbpf"],
      "conditions": [["OS!='linux'", {"type": "none"}]]
    }
  ]
}
