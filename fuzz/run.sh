#!/usr/bin/env bash
# Runs the OAP/1 decoder fuzz target for N seconds (default 600).
# Needs cargo-fuzz (`cargo install cargo-fuzz`); works on stable through
# RUSTC_BOOTSTRAP. Seeds the corpus from the conformance vectors.
set -euo pipefail
cd "$(dirname "$0")"
secs="${1:-600}"
mkdir -p corpus/decode
python3 - <<'PY'
import json, glob, os, binascii
for p in glob.glob("../crates/oap/tests/vectors/*.json"):
    v = json.load(open(p))
    name = os.path.basename(p)[:-5]
    if v.get("layer") == "decode" and "fill" not in v:
        open(f"corpus/decode/{name}", "wb").write(b"\x00" + binascii.unhexlify(v["hex"]))
    elif v.get("layer") == "session":
        raw = b"".join(binascii.unhexlify(s["recv"]) for s in v["steps"] if "recv" in s)
        open(f"corpus/decode/{name}", "wb").write(b"\x00" + raw)
PY
RUSTC_BOOTSTRAP=1 cargo fuzz run decode corpus/decode -- -max_total_time="$secs" -print_final_stats=1
