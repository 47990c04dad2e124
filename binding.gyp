{
  "target_defaults": {
    "include_dirs": [
      "<!@(node -p \"require('node-addon-api').include\")",
      "addon"
    ],
    "defines": [
      "NAPI_VERSION=8",
      "NAPI_CPP_EXCEPTIONS",
      "_GNU_SOURCE"
    ],
    "cflags!": [
      "-fno-exceptions"
    ],
    "cflags_cc!": [
      "-fno-exceptions",
      "-std=gnu++17"
    ],
    "cflags": [
      "-O2",
      "-Wall",
      "-Wextra",
      "-Wno-unused-parameter",
      "-Wno-missing-field-initializers"
    ],
    "cflags_cc": [
      "-std=gnu++17",
      "-fexceptions",
      "-O2"
    ],
    "libraries": [
      "-lpthread"
    ],
    "conditions": [
      [
        "OS!='linux'",
        {
          "type": "none"
        }
      ]
    ]
  },
  "targets": [
    {
      "target_name": "vhostwire",
      "sources": [
        "addon/core/checksum.cc",
        "addon/core/counters.cc",
        "addon/core/guest_fault.cc",
        "addon/core/guest_memory.cc",
        "addon/core/netdev_stats.cc",
        "addon/core/offload.cc",
        "addon/core/port_params.cc",
        "addon/core/segment.cc",
        "addon/core/udp_frame.cc",
        "addon/forward/bridge.cc",
        "addon/forward/fdb.cc",
        "addon/forward/offload_fallback.cc",
        "addon/napi/binding.cc",
        "addon/ports/test/gen.cc",
        "addon/ports/test/sink.cc",
        "addon/ports/uplink/af_packet.cc",
        "addon/ports/uplink/af_xdp.cc",
        "addon/ports/uplink/link_monitor.cc",
        "addon/ports/uplink/uplink.cc",
        "addon/ports/uplink/xdp_redirect.cc",
        "addon/ports/vhost_user/vhost_user.cc",
        "addon/ports/vhost_user/vhost_user_wire.cc",
        "addon/ports/vhost_user/virtio_net.cc",
        "addon/runtime/engine.cc",
        "addon/runtime/pmd.cc",
        "addon/runtime/port_kinds.cc",
        "addon/runtime/privileges.cc",
        "addon/virtio/split_ring.cc"
      ]
    },
    {
      "target_name": "vhostwire_frontend",
      "sources": [
        "addon/core/udp_frame.cc",
        "addon/frontend/driver_ring.cc",
        "addon/frontend/guest_ram.cc",
        "addon/frontend/racer.cc",
        "addon/frontend/traffic.cc",
        "addon/frontend/vhost_user_client.cc",
        "addon/frontend/virtio_user.cc",
        "addon/napi/frontend.cc",
        "addon/ports/vhost_user/vhost_user_wire.cc"
      ]
    }
  ]
}
