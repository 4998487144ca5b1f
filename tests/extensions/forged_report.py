"""An extension that answers its own inspection with a forged, oversized report."""

import os
import stat
import struct

import msgspec

for name in sorted(os.listdir("/proc/self/fd"), key=int):
    try:
        is_socket = stat.S_ISSOCK(os.fstat(int(name)).st_mode)
    except OSError:  # the listing's own descriptor, closed by now
        continue
    if is_socket:
        body = msgspec.msgpack.encode(["report", {"problems": ["x" * 10_000], "class_name": "X"}])
        os.write(int(name), struct.pack(">I", len(body)) + body)
        break
os._exit(0)
