"""Per-tensor difference of two KILN_TRACE dumps (docs/COMPARING.md): for each file present in
both, max |a - b| / max |a|, in layer order. Usage: python3 trace_diff.py DIR_A DIR_B [NAMES...]"""
import os, re, sys
import numpy as np

a, b = sys.argv[1], sys.argv[2]
names = sys.argv[3:] or None
rows = []
for f in os.listdir(a):
    m = re.match(r"(.+)-(\d+)\.f32$", f)
    if not m or not os.path.exists(os.path.join(b, f)) or (names and m.group(1) not in names):
        continue
    x = np.fromfile(os.path.join(a, f), dtype=np.float32)
    y = np.fromfile(os.path.join(b, f), dtype=np.float32)
    if x.shape != y.shape:
        rows.append((int(m.group(2)), m.group(1), float("nan")))
        continue
    rows.append((int(m.group(2)), m.group(1), float(np.max(np.abs(x - y)) / max(np.max(np.abs(x)), 1e-30))))
for layer, name, err in sorted(rows):
    print(f"{layer:3d} {name:16s} {err:.3e}")
