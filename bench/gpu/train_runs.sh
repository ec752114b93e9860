#!/usr/bin/env bash
# GPU check of training (`--device cuda`), run on a lent GPU machine by the `device` tool:
# trains the accuracy benchmark's runs there, in parallel, and packs each run folder into $OUT.
# Back here, unpack them into bench/work/accuracy/ and run `bench/accuracy.py --epochs E`: it picks
# the finished run up (LFW is found under this machine's TANDEM_DATA_HOME) and exports/measures on the CPU.
#   needs: .gpudata/lfw_home (LFW people with >= 20 photos) and .whl/ (pydantic & co. for Python 3.12)
set -uo pipefail
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target /tmp/site .whl/*.whl || exit 1
export PYTHONPATH="$PWD/src:/tmp/site" TANDEM_DATA_HOME="$PWD/.gpudata" PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,memory.total --format=csv
python3 -c "import torch; print('torch', torch.__version__, 'cuda', torch.cuda.is_available())"
cores=$(nproc); per=$(( cores / $# ))
pids=(); i=0
for spec in "$@"; do   # each spec: EPOCHS:SEED
  e=${spec%%:*}; s=${spec##*:}
  lo=$(( i * per )); hi=$(( lo + per - 1 ))
  timeout "${TRAIN_LIMIT_S:-400}" taskset -c "$lo-$hi" python3 bench/accuracy.py --part classify --device cuda --train-only --epochs "$e" --seed "$s" \
    > "$OUT/train-e$e-s$s.log" 2>&1 &   # 2 runs: 4 archives + 2 logs stay within the 8 files that come back
  pids+=($!); i=$(( i + 1 ))
done
rc=0
for p in "${pids[@]}"; do wait "$p" || rc=1; done
# At most 16 MiB a file comes back: the latest checkpoint (for --resume) travels apart from the rest.
for d in bench/work/accuracy/run-*; do
  n=$(basename "$d")
  tar czf "$OUT/$n.tgz" --exclude=checkpoint.pt -C bench/work/accuracy "$n"
  tar czf "$OUT/$n.ckpt.tgz" -C bench/work/accuracy "$n/checkpoint.pt"
done
ls -la "$OUT"; tail -n 3 "$OUT"/*.log
exit $rc
