#!/usr/bin/env bash
# Here, before a GPU machine is lent (`make gpu-stage`): everything `tools/gpu/run.sh` needs there.
#   1. ../shared/gpu/stage.sh: .gpu-a/ (the CUDA provider) and .gpu-b/ (the rest of onnxruntime-gpu,
#      the embedder's wheels, models/, unpack.sh). Skipped when both are already staged (it takes
#      ~2 min and downloads ~100 MB); RESTAGE=1 forces it. models/ is refreshed in every case.
#   2. The peer's wheel into .gpu-b/whl (unpack.sh installs every wheel there, without dependencies).
#   3. The bench inputs into .gpu-b/inputs/: an LFW subset and 1280x720 video frames as the video
#      ingest sends them (the GPU machine has neither ../shared/data nor PyAV).
#   4. The commit the numbers belong to (the GPU machine gets the working tree without .git).
# Then checks the 64 MiB that one device call may carry: the working tree plus .gpu-b/.
set -euo pipefail
root=$(git rev-parse --show-toplevel)
cd "$root"
PY=${PY:-.venv/bin/python}
STAGE=${STAGE:-$root/../shared/gpu/stage.sh}
PEER=${PEER:-facenet-pytorch==2.6.0}
PHOTOS=${PHOTOS:-1000}
FRAMES=${FRAMES:-8}
LIMIT_MIB=64

if [[ ${RESTAGE:-0} == 1 || ! -f .gpu-a/cuda_provider.so.xz || ! -f .gpu-b/ort_rest.tar.xz ]]; then
  bash "$STAGE"
else
  echo "onnxruntime-gpu already staged in .gpu-a/ and .gpu-b/ (RESTAGE=1 redoes it); refreshing models/"
  rm -rf .gpu-b/models && cp -r models .gpu-b/models
fi
# A pure-Python wheel: pip picks the same file whatever the platform; torch comes with the machine.
"$PY" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 -d .gpu-b/whl "$PEER"
rm -rf .gpu-b/inputs
"$PY" -m tools.gpu.stage_inputs --out .gpu-b/inputs --photos "$PHOTOS" --frames "$FRAMES"
echo "$(git rev-parse --short HEAD)$(git diff --quiet HEAD -- . ':!reports' || echo '+uncommitted')" \
  > .gpu-b/commit.txt

# Bytes, not du -m: that rounds every small file up to a whole MiB.
mib() { echo $((($(du -cb "$@" | tail -1 | cut -f1) + 1048575) / 1048576)); }
tree=$(git ls-files -z --cached --others --exclude-standard | du -cb --files0-from=- 2>/dev/null | tail -1 | cut -f1)
tree=$(((tree + 1048575) / 1048576))
a=$(mib .gpu-a)
b=$(mib .gpu-b)
echo "sizes (MiB): working tree $tree, .gpu-a $a, .gpu-b $b"
for carried in "$a" "$b"; do
  if ((tree + carried > LIMIT_MIB)); then
    echo "a call would carry $((tree + carried)) MiB, over the $LIMIT_MIB MiB limit: lower PHOTOS or FRAMES" >&2
    exit 1
  fi
done
echo "ready: see tools/gpu/run.sh for the two device calls"
