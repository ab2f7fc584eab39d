#!/usr/bin/env python3
"""A/B of two berth-runtime (or runc) binaries, `run` of /bin/true in a busybox bundle,
each run SPACING seconds after the last (default 0.15) so that every run pays the
kernel's cgroup-attach grace period, alternating which binary goes first in each pair.
Not a test. Usage (as root): bench/runtime/ab_spaced.py OLD NEW [PAIRS]   (default 40)
"""
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

old, new = os.path.abspath(sys.argv[1]), os.path.abspath(sys.argv[2])
pairs = int(sys.argv[3]) if len(sys.argv) > 3 else 40
spacing = float(os.environ.get("SPACING", "0.15"))
work = tempfile.mkdtemp(prefix="berth-ab-")
try:
    rootfs = os.path.join(work, "bundle", "rootfs")
    for d in ("bin", "proc", "sys", "dev", "tmp", "etc"):
        os.makedirs(os.path.join(rootfs, d))
    shutil.copy("/bin/busybox", os.path.join(rootfs, "bin"))
    os.symlink("busybox", os.path.join(rootfs, "bin", "true"))
    bundle = os.path.join(work, "bundle")
    subprocess.run([new, "spec"], cwd=bundle, check=True)
    subprocess.run(
        ["sh", "-c", "jq '.process.terminal=false | .process.args=[\"/bin/true\"]' "
         "config.json > c.json && mv c.json config.json"], cwd=bundle, check=True)
    res = {"old": [], "new": []}
    for i in range(pairs):
        order = (("old", old), ("new", new)) if i % 2 == 0 else (("new", new), ("old", old))
        for k, b in order:
            time.sleep(spacing)
            t = time.perf_counter()
            subprocess.run([b, "--root", os.path.join(work, k), "run", "-b", bundle, "ab"],
                           check=True)
            res[k].append((time.perf_counter() - t) * 1000)
    for k, v in res.items():
        print(f"{k}: median {statistics.median(v):.2f} ms, mean {statistics.mean(v):.2f}, "
              f"min {min(v):.2f} ({len(v)} runs)")
finally:
    shutil.rmtree(work, ignore_errors=True)
