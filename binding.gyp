{
  "targets": [
    {
      "target_name": "loop_watch",
      "sources": ["native/loop_watch.c"],
      "cflags": ["-std=gnu11", "-O2", "-Wall", "-Wextra"],
      "libraries": ["-lpthread"]
    },
    {
      "target_name": "gc_stats",
      "sources": ["native/gc_stats.cc"],
      "cflags_cc": ["-std=c++17", "-O2", "-Wall", "-Wextra"]
    }
  ]
}
