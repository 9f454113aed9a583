#!/usr/bin/env python3
"""A TDX module update client written only against the kernel's documented files.

It knows nothing of tdxseam: plain open/read/write on the paths of the kernel's ABI
(Documentation/ABI/testing/sysfs-devices-faux-tdx-host, sysfs-class-firmware) and the procedure of
Documentation/arch/x86/tdx.rst and Intel's reference script, under a root directory (`/` on a TDX
host). Usage:

    fw_upload_client.py ROOT IMAGE [--timeout SECONDS]

Prints one JSON object; exit status 0 if the update succeeded, 1 if the kernel reported an error,
2 if the host cannot take an update, 3 on a timeout.
"""

import json
import os
import sys
import time


def read(path):
    with open(path, "r") as f:
        return f.read()


def write(path, text):
    with open(path, "w") as f:
        f.write(text)


def main(argv):
    root, image = argv[1], argv[2]
    timeout = float(argv[argv.index("--timeout") + 1]) if "--timeout" in argv else 30.0
    host = os.path.join(root, "sys/devices/faux/tdx_host")
    fw = os.path.join(root, "sys/class/firmware/tdx_module")
    out = {}

    # 1. runtime update is supported iff the upload directory exists
    if not os.path.isdir(fw):
        out["refused"] = "no /sys/class/firmware/tdx_module: runtime update not supported"
        print(json.dumps(out))
        return 2
    # 2. updates left, all CPUs online
    out["num_remaining_updates"] = int(read(os.path.join(host, "num_remaining_updates")))
    online = read(os.path.join(root, "sys/devices/system/cpu/online")).strip()
    present = read(os.path.join(root, "sys/devices/system/cpu/present")).strip()
    if out["num_remaining_updates"] == 0 or online != present:
        out["refused"] = "no updates left" if online == present else "CPUs offline"
        print(json.dumps(out))
        return 2
    out["version_before"] = read(os.path.join(host, "version")).strip()
    out["seamldr_version"] = read(os.path.join(host, "seamldr_version")).strip()
    cpus = [ln for ln in read(os.path.join(root, "proc/cpuinfo")).splitlines() if ln.startswith("processor")]
    out["cpus"] = len(cpus)

    # 3. the fw_upload sequence
    with open(image, "rb") as f:
        data = f.read()
    write(os.path.join(fw, "loading"), "1")
    with open(os.path.join(fw, "data"), "wb") as f:
        f.write(data)  # the buffered writer goes on after short (page-sized) writes
    write(os.path.join(fw, "loading"), "0")
    statuses = []
    deadline = time.monotonic() + timeout
    while True:
        status = read(os.path.join(fw, "status")).strip()
        if not statuses or statuses[-1] != status:
            statuses.append(status)
        if status == "idle":
            break
        if time.monotonic() > deadline:
            out["statuses"] = statuses
            out["timeout"] = True
            print(json.dumps(out))
            return 3
        time.sleep(0.02)
    out["statuses"] = statuses
    out["error"] = read(os.path.join(fw, "error")).strip()
    out["remaining_size"] = int(read(os.path.join(fw, "remaining_size")))
    try:
        out["version_after"] = read(os.path.join(host, "version")).strip()
    except OSError as e:
        out["version_after"] = None
        out["version_errno"] = e.errno
    out["num_remaining_updates_after"] = int(read(os.path.join(host, "num_remaining_updates")))
    print(json.dumps(out))
    return 0 if out["error"] == "" else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv))
