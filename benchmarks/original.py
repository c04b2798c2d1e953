"""The original package (codebook-features 0.1.2 from PyPI) in an environment of its own, so
the benchmarks can time it beside ours on the same machine, in the same run.

It needs transformers 4.35 (its model classes do not import under transformers 5), so it
cannot share this project's environment. The first use creates ``benchmarks/.original-venv``
with the same Python and the same torch as ours, and installs the original's pinned versions
(network needed once; later runs reuse it).
"""

from __future__ import annotations

import json
import subprocess
import sys
import venv
from pathlib import Path

HERE = Path(__file__).resolve().parent
VENV = HERE / ".original-venv"
CHILD = HERE / "original_child.py"
REQUIREMENTS = [
    "transformers==4.35.2",
    "accelerate==1.16.0",
    "datasets==5.0.1",
    "einops==0.8.2",
    "fancy-einsum==0.0.3",
    "huggingface_hub==0.36.2",
    "jaxtyping==0.3.11",
    "numpy==2.4.6",
    "pandas==3.1.1",
    "rich==15.0.0",
    "scikit-learn==1.9.1",
    "termcolor==3.3.0",
    "tokenizers==0.15.2",
    "tqdm==4.70.1",
    "typeguard==4.6.1",
    "wandb==0.31.0",
    "zstandard==0.25.0",
]
"""What the original's layer imports, at versions it ran with here; torch is pinned to ours
(added in :func:`python`)."""
WITHOUT_DEPENDENCIES = ["codebook-features==0.1.2", "transformer-lens==1.7.0"]
"""Installed without their declared dependencies: transformer-lens 1.7.0 pins the CUDA
libraries (gigabytes a CPU never uses) and lacks typeguard, which it imports."""


def python() -> Path:
    """The original environment's Python, created and installed on first use."""
    import torch

    pins = [*REQUIREMENTS, f"torch=={torch.__version__}"]  # the very build ours uses
    build = torch.__version__.partition("+")[2]  # e.g. cpu, cu128: from PyTorch's own index
    index = [f"--extra-index-url=https://download.pytorch.org/whl/{build}"] if build else []
    executable = VENV / "bin" / "python"
    stamp = VENV / "requirements.json"
    wanted = {"with": pins, "without": WITHOUT_DEPENDENCIES}
    if executable.exists() and stamp.exists() and json.loads(stamp.read_text()) == wanted:
        return executable
    print(f"installing the original ({WITHOUT_DEPENDENCIES[0]}) into {VENV} ...", flush=True)
    venv.EnvBuilder(with_pip=True, clear=True).create(VENV)
    pip = [str(executable), "-m", "pip", "install", "-q"]
    # the very torch build may already be at hand (pip's own indexes or find-links): try
    # without PyTorch's index first, which may not be reachable
    if subprocess.run([*pip, *pins], check=False).returncode:
        subprocess.run([*pip, *index, *pins], check=True)
    subprocess.run([*pip, "--no-deps", *WITHOUT_DEPENDENCIES], check=True)
    stamp.write_text(json.dumps(wanted))
    return executable


def run(mode: str, **spec: object) -> dict:
    """One process of ``original_child.py`` in the original's environment: ``layer`` (one
    layer's forward + backward) or ``step`` (training steps without and with codebooks)."""
    cmd = [str(python()), "-I", str(CHILD), mode, "--spec", json.dumps(spec)]  # isolated
    done = subprocess.run(cmd, capture_output=True, text=True, cwd="/", check=False)
    if done.returncode:
        sys.exit(f"the original's {mode} failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def time_layer(groups: int, group_dim: int, k: int, tokens: int, num_codes: int, reps: int) -> dict:
    """One process of the original's layer: ``{"seconds", "all_seconds", "peak_mib"}``."""
    spec = {"groups": groups, "group_dim": group_dim, "k": k, "tokens": tokens}
    return run("layer", **spec, num_codes=num_codes, reps=reps)
