#!/usr/bin/env bash
# Download into .whl the wheels that the lent GPU machine lacks for `import cellsae_kit`.
#
# Its image (Python 3.12) has torch, numpy, scipy, pandas, h5py, scikit-learn, tqdm, safetensors and matplotlib,
# but none of the scverse packages; nothing can be fetched there. The versions are our pins (constraints.txt).
# The folder is git-ignored (.git/info/exclude) and travels with `run(..., carry=[".whl"])`; benchmarks/gpu.sh
# installs it there. About 15 MB.
set -euo pipefail
cd "$(dirname "$0")/.."
grep -qx '/.whl/' .git/info/exclude 2>/dev/null || echo '/.whl/' >>.git/info/exclude
PACKAGES="anndata mudata zarr numcodecs donfig google-crc32c legacy-api-wrap natsort scverse-misc pooch platformdirs
array-api-compat session-info2"
PLATFORMS="--platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64
--platform manylinux2014_x86_64"
mkdir -p .whl
for package in $PACKAGES; do
    pin=$(grep -i "^${package}==" constraints.txt)
    # shellcheck disable=SC2086
    python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp $PLATFORMS \
        -d .whl "$pin"
done
du -sh .whl
