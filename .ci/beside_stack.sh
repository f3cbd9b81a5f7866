#!/usr/bin/env bash
# `pip install .` into an environment that already holds a user's stack at other versions inside the declared
# ranges (older than the lock): nothing of it may be replaced, no optional package may come along, and a smoke
# subset of the tests must pass there.
#   bash .ci/beside_stack.sh [VENV_FOLDER]
set -euo pipefail
cd "$(dirname "$0")/.."
venv=${1:-$(mktemp -d)/beside}
python3 -m venv "$venv"
py="$venv/bin/python"
"$py" -m pip install --quiet --upgrade pip
# the user's stack: torch as the lock (the one CPU build on this disk), everything else older than the lock
stack=(torch==2.13.0 numpy==2.2.6 lightning==2.5.5 diffusers==0.35.2 scipy==1.15.3 safetensors==0.5.3 einops==0.8.0
       av==15.1.0 omegaconf==2.3.0 pillow==11.3.0 tqdm==4.67.1 vector-quantize-pytorch==1.27.0
       huggingface-hub==0.36.0 pytest==8.4.2)
"$py" -m pip install --quiet "${stack[@]}"
"$py" -m pip freeze | sort > "$venv/before.txt"
"$py" -m pip install --quiet .
"$py" -m pip freeze | sort > "$venv/after.txt"
added=$(comm -13 "$venv/before.txt" "$venv/after.txt")
removed=$(comm -23 "$venv/before.txt" "$venv/after.txt")
echo "added by pip install .: ${added//$'\n'/, }"
[ -z "$removed" ] || { echo "pip install . replaced the user's packages: $removed" >&2; exit 1; }
for optional in deepspeed crafter transformers tensorboard wandb; do
  ! grep -qi "^$optional==" "$venv/after.txt" || { echo "pip install . pulled the optional $optional" >&2; exit 1; }
done
for package in "${stack[@]}"; do
  grep -qi "^${package}\(+[a-z0-9.]*\)\?$" "$venv/after.txt" || { echo "$package is not what it was" >&2; exit 1; }
done
"$venv/bin/nbp" --version
# smoke: the official goldens of both families, safe loading and the command line, run from the installed package
cd tests && "$py" -m pytest -p no:cacheprovider -q -x test_cli.py test_safe_loading.py test_far.py test_tokenizer.py test_transformer.py
