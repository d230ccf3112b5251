#!/usr/bin/env bash
# The main job on one machine with the embedded defaults: `spinenode serve` (SQLite,
# serverless broker, a worker child), a synthetic lumbar MR study sent to it by C-STORE,
# then the study's state, its series classification and the queue summary.
set -euo pipefail
work="$(mktemp -d -t spinenode-demo-XXXXXX)"
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
export SPINENODE_DATA_DIR="$work/data" SPINENODE_DICOM_HOST=127.0.0.1
export SPINENODE_DICOM_PORT="$(free_port)" SPINENODE_HTTP_PORT="$(free_port)"
export SPINENODE_STABLE_SECONDS="${SPINENODE_STABLE_SECONDS:-3}" SPINENODE_SWEEP_INTERVAL=0.5
api="http://127.0.0.1:$SPINENODE_HTTP_PORT"

spinenode serve >"$work/serve.log" 2>&1 &
serve_pid=$!
trap 'kill $serve_pid 2>/dev/null; wait $serve_pid 2>/dev/null || true; echo "logs and data kept in $work"' EXIT

echo "== writing a synthetic lumbar MR study (sagittal T1, sagittal T2, axial T2)"
spinenode phantom "$work/phantom" --studies 1 --region lumbar --modality MR --seed 7 >/dev/null

python3 - "$api" <<'PY'
import sys, time, urllib.request
for _ in range(300):
    try:
        urllib.request.urlopen(sys.argv[1] + "/api/health", timeout=1); break
    except OSError:
        time.sleep(0.2)
else:
    sys.exit("spinenode serve did not come up; see serve.log")
PY
echo "== C-STORE to SPINENODE@127.0.0.1:$SPINENODE_DICOM_PORT"
spinenode send "$work/phantom/train_images" --to "SPINENODE@127.0.0.1:$SPINENODE_DICOM_PORT" --calling-ae DEMOPACS

echo "== waiting for the quiet period ($SPINENODE_STABLE_SECONDS s) and the worker"
python3 - "$api" <<'PY'
import json, sys, time, urllib.request
api = sys.argv[1]
def get(path):
    return json.load(urllib.request.urlopen(api + path, timeout=5))
deadline = time.time() + 180
while time.time() < deadline:
    studies = get("/api/studies")
    if studies and studies[0]["state"] not in ("RECEIVING", "COMPLETE", "QUEUED", "ANALYZING"):
        break
    time.sleep(0.5)
else:
    sys.exit("study did not leave the queue in 180 s")
st = get("/api/studies/" + studies[0]["study_uid"])
print(f"study {st['study_uid']}: {st['state']}" + (f" ({st['failed_stage']}: {st['reason']})" if st["reason"] else ""))
print(f"{'series':<8}{'images':>7}  {'plane':<9}{'weighting':<10}{'role':<12}description")
for s in st["series"]:
    c = s["classification"] or {}
    print(f"{s['series_number'] or '':<8}{s['instance_count']:>7}  {c.get('plane',''):<9}{c.get('weighting',''):<10}"
          f"{c.get('role') or '-':<12}{s['description'] or ''}")
print("events:")
for e in st["events"]:
    print(f"  {e['at']}  {e['state']:<10} {e['detail'] or ''}")
PY
echo "== spinenode status"
spinenode status
