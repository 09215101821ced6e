# Four independent addons. scripts/install.js builds each with its own node-gyp run
# (-Dsysprobe_addon=<name>) so one that fails to build never takes the others with it;
# a plain `node-gyp rebuild` builds all four. The C++ standard is left to Node's
# common.gypi: each version's V8 headers need their own (C++17 up to Node 22, C++20 from 24).
{
  "variables": { "sysprobe_addon%": "all" },
  "conditions": [
    ["sysprobe_addon in ('all', 'loop_watch')", {
      "targets": [{
        "target_name": "loop_watch",
        "sources": ["native/loop_watch.c"],
        "cflags": ["-std=gnu11", "-O2", "-Wall", "-Wextra"],
        "libraries": ["-lpthread", "-ldl"]
      }]
    }],
    ["sysprobe_addon in ('all', 'heap_scan')", {
      "targets": [{
        "target_name": "heap_scan",
        "sources": ["native/heap_scan.c"],
        "cflags": ["-std=gnu11", "-O2", "-Wall", "-Wextra"]
      }]
    }],
    ["sysprobe_addon in ('all', 'thread_stack')", {
      "targets": [{
        "target_name": "thread_stack",
        "sources": ["native/thread_stack.cc"],
        "cflags_cc": ["-O2", "-Wall", "-Wextra"],
        "libraries": ["-ldl"]
      }]
    }],
    ["sysprobe_addon in ('all', 'gc_stats')", {
      "targets": [{
        "target_name": "gc_stats",
        "sources": ["native/gc_stats.cc"],
        "cflags_cc": ["-O2", "-Wall", "-Wextra"]
      }]
    }]
  ]
}
