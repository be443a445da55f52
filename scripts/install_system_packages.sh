#!/usr/bin/env bash
# Installs the Debian packages the benchmark and its tests use, when missing and we may (root + apt-get):
# - dataset-fashion-mnist: Fashion-MNIST (the benchmark reads it; without it, it fetches the official files);
# - texlive-latex-base, texlive-latex-recommended: pdflatex and booktabs, with which the tests compile the paper's
#   LaTeX tables once (about 30 s to install; without them that test checks the tables' structure only);
# - chromium-headless-shell: the workflow test opens the `snakemake --report` page in it (about 12 s to install);
# - slurmctld, slurmd, slurm-client, munge: a single-node SLURM that tests/test_slurm.py starts to run the workflow
#   through `snakemake --executor slurm` (about 10 s to install; nothing starts by itself).
# Everything else comes from PyPI packages or the shared data folder.
set -euo pipefail
FASHION=/usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz
missing=()
[[ -f $FASHION ]] || missing+=(dataset-fashion-mnist)
command -v pdflatex >/dev/null && kpsewhich booktabs.sty >/dev/null 2>&1 || missing+=(texlive-latex-base texlive-latex-recommended)
command -v chromium-headless-shell >/dev/null || missing+=(chromium-headless-shell)
for tool in slurmctld slurmd sbatch munged; do
  PATH=$PATH:/usr/sbin command -v $tool >/dev/null || { missing+=(slurmctld slurmd slurm-client munge); break; }
done
[[ ${#missing[@]} -eq 0 ]] && exit 0
if [[ $(id -u) -eq 0 ]] && command -v apt-get >/dev/null; then
  echo "[setup] installing Debian packages: ${missing[*]}"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
else
  echo "[setup] missing Debian packages: ${missing[*]}; this user cannot apt-get install them." >&2
  echo "        Run as root: apt-get install -y --no-install-recommends ${missing[*]}. Without Fashion-MNIST the" >&2
  echo "        benchmark fetches the official files on first use (README, Quickstart: Data); without TeX the" >&2
  echo "        LaTeX-compile test checks the tables' structure only, the report test does not open a browser, and the" >&2
  echo "        SLURM test skips." >&2
fi
