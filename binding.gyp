{
  "targets": [
    {
      "target_name": "loop_watch",
      "sources": ["native/loop_watch.c"],
      "cflags": ["-std=gnu11", "-O2", "-Wall", "-Wextra"],
      "libraries": ["-lpthread"]
    },
    {
      "target_name": "heap_scan",
      "sources": ["native/heap_scan.c"],
      "cflags": ["-std=gnu11", "-O2", "-Wall", "-Wextra"]
    },
    {
      "target_name": "gc_stats",
      "sources": ["native/gc_stats.cc"],
      "cflags_cc": ["-std=c++17", "-O2", "-Wall", "-Wextra"]
    }
  ]
}
