"""Where the kernel puts the runtime-update files (spec-linux.md §7), relative to a root.

The emulated tree serves these paths and the operator tool reads them, on a real host or on the
emulator, so they are written once. Prefix "/" for the host's own root.
"""

from __future__ import annotations

TDX_HOST = "sys/devices/faux/tdx_host"
TDX_MODULE_UPLOAD = f"{TDX_HOST}/firmware/tdx_module"  # merged kernel and the v4+ patch sets
CLASS_TDX_MODULE = "sys/class/firmware/tdx_module"  # the same directory, through the class link
SEAMLDR_UPLOAD = f"{TDX_HOST}/firmware/seamldr_upload"  # v3 and earlier patch sets
CLASS_SEAMLDR_UPLOAD = "sys/class/firmware/seamldr_upload"
CPUINFO = "proc/cpuinfo"
CPU_ONLINE = "sys/devices/system/cpu/online"
CPU_PRESENT = "sys/devices/system/cpu/present"
CPU_POSSIBLE = "sys/devices/system/cpu/possible"
UPLOAD_FILES = ("loading", "data", "status", "error", "remaining_size", "cancel")
# The kernel log in `dmesg` form ("[seconds.micro] text" lines). An emulated host serves its
# kernel's log here (a regular read-only file, unlike /dev/kmsg); Debian-family hosts keep the
# boot log at the same path. `tdxseam doctor` reads it when not given --dmesg.
DMESG = "var/log/dmesg"
# The msr driver's device of CPU N (arch/x86/kernel/msr.c): pread 8 bytes at offset = MSR number.
MSR_DEVICE = "dev/cpu/{cpu}/msr"
