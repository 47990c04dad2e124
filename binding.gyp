{
  "targets": [
    {
      "target_name": "vhostwire",
      "sources": [
        "addon/af_packet.cc",
        "addon/af_xdp.cc",
        "addon/binding.cc",
        "addon/counters.cc",
        "addon/engine.cc",
        "addon/gen.cc",
        "addon/guest_fault.cc",
        "addon/guest_memory.cc",
        "addon/pmd.cc",
        "addon/sink.cc",
        "addon/uplink.cc",
        "addon/vhost_user.cc",
        "addon/vhost_user_wire.cc",
        "addon/virtio_net.cc",
        "addon/virtio_user.cc",
        "addon/virtqueue.cc"
      ],
      "include_dirs": ["<!@(node -p \"require('node-addon-api').include\")"],
      "defines": ["NAPI_VERSION=8", "NAPI_CPP_EXCEPTIONS", "_GNU_SOURCE"],
      "cflags!": ["-fno-exceptions"],
      "cflags_cc!": ["-fno-exceptions", "-std=gnu++17"],
      "cflags": ["-O2", "-Wall", "-Wextra", "-Wno-unused-parameter", "-Wno-missing-field-initializers"],
      "cflags_cc": ["-std=gnu++17", "-fexceptions", "-O2"],
      "libraries": ["-lpthread"],
      "conditions": [
        ["OS!='linux'", {"type": "none"}]
      ]
    }
  ]
}
