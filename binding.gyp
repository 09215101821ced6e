{
  "targets": [
    {
      "target_name": "loop_watch",
      "sources": ["native/loop_watch.c"],
      "cflags": ["-std=gnu11", "-O2", "-Wall", "-Wextra"],
      "libraries": ["-lpthread"]
    }
  ]
}
