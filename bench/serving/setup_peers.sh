#!/usr/bin/env bash
# One virtual environment per peer server under bench/work/venvs/<peer> (BentoML, LitServe, Triton,
# KServe, MLServer), so that their pins (PyTriton: numpy < 2, protobuf < 7; MLServer: its own FastAPI)
# never meet each other or Tandem's own .venv; plus a small
# "tools" venv with py-spy for `bench/serving.py --profile`.
# Idempotent: a venv whose requirement line has not changed is left as it is. A peer that cannot be
# installed is reported and skipped (bench/serving.py then notes it as not measured).
#   bench/serving/setup_peers.sh [PYTHON [PEER...]]   (default: python3, which must be Python 3.11;
#                                                      every peer and tools)
set -uo pipefail
HERE="$(cd "$(dirname "$0")" && pwd)"
VENVS="$HERE/../work/venvs"
PY="${1:-python3}"
shift || true
mkdir -p "$VENVS"

# The versions measured in bench/results/serving.json (which records what was installed).
ORT="onnxruntime==1.32.0"
declare -A REQS=(
  [bentoml]="bentoml==1.4.40 $ORT numpy==2.4.6"
  [litserve]="litserve==0.2.19 $ORT numpy==2.4.6 uvloop==0.23.0"
  [triton]="nvidia-pytriton==0.7.0 $ORT numpy==1.26.4 protobuf<7"
  [kserve]="kserve==0.21.0 $ORT numpy==2.4.6"
  [mlserver]="mlserver==1.7.1 $ORT numpy==2.4.6 uvloop==0.21.0"  # 0.22+ breaks its workers (no default loop)
  [tools]="py-spy==0.4.3"
)

quiet_pip() {  # pip, without the noise of this machine's optional local indexes
  "$@" 2> >(grep -v "is ignored: it is neither a file nor a directory" >&2)
}

PEERS=("$@")
[[ ${#PEERS[@]} -gt 0 ]] || PEERS=(bentoml litserve triton kserve mlserver tools)
for peer in "${PEERS[@]}"; do
  if [[ -z "${REQS[$peer]+set}" ]]; then
    echo "unknown peer $peer; choose from: ${!REQS[*]}" >&2
    exit 2
  fi
  venv="$VENVS/$peer"
  want="${REQS[$peer]}"
  if [[ -f "$venv/.installed" && "$(cat "$venv/.installed")" == "$want" ]]; then
    echo "venv $peer: up to date ($want)"
    continue
  fi
  echo "venv $peer: installing $want"
  rm -rf "$venv"
  # shellcheck disable=SC2086
  if "$PY" -m venv "$venv" && quiet_pip "$venv/bin/pip" install --quiet --upgrade pip \
      && quiet_pip "$venv/bin/pip" install --quiet $want; then
    echo "$want" > "$venv/.installed"
  else
    echo "venv $peer: installation FAILED; it will not be measured" >&2
    rm -rf "$venv"
  fi
done
exit 0  # a missing peer is reported in the results, not a reason to skip the others
