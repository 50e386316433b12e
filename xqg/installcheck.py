"""Install and node self-check: `python -m xqg.installcheck [--gpu]`; exit status 1 with every problem named.

Always: exactly one FAISS distribution (faiss-cpu and faiss-gpu-* both install the `faiss` package, so two of them
leave whichever was installed last, silently). With --gpu (cluster.yaml runs it on each GPU node at set-up, so a
broken node fails loudly instead of failing or slowing every unit sent to it): torch sees a GPU and computes on it,
CTranslate2 counts a CUDA device, and FAISS is the GPU build and answers a search on a GPU index.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from importlib import metadata


def faiss_distributions() -> list[str]:
    """Installed distributions that provide the `faiss` package (faiss-cpu, faiss-gpu, faiss-gpu-cu12, ...)."""
    names = {(d.metadata["Name"] or "").lower() for d in metadata.distributions()}
    return sorted(n for n in names if n == "faiss" or n.startswith("faiss-"))


def check_faiss_packages() -> str | None:
    """A problem with the FAISS install, or None."""
    found = faiss_distributions()
    if len(found) == 1:
        return None
    if not found:
        return 'no FAISS installed: pip install -e ".[cpu]" (or ".[gpu]" on a GPU machine)'
    return (f"{len(found)} FAISS distributions installed ({', '.join(found)}); they overwrite each other's `faiss` "
            f"package. Keep one: pip uninstall -y {' '.join(found)}, then install the cpu or the gpu extra")


def check_torch_gpu() -> str | None:
    """torch sees a GPU and a matrix product on it gives the CPU's answer."""
    import torch

    if not torch.cuda.is_available():
        return f"torch {torch.__version__} (CUDA {torch.version.cuda}) sees no GPU: driver too old for it, or no GPU"
    a = torch.arange(12, dtype=torch.float32).reshape(3, 4)
    if not torch.equal((a.cuda() @ a.T.cuda()).cpu(), a @ a.T):
        return "torch computes wrong results on the GPU"
    return None


def check_ctranslate2_gpu() -> str | None:
    """CTranslate2 counts at least one CUDA device."""
    import ctranslate2

    n = ctranslate2.get_cuda_device_count()
    return None if n > 0 else f"CTranslate2 {ctranslate2.__version__} counts no CUDA device"


def check_faiss_gpu() -> str | None:
    """FAISS is the GPU build, sees a GPU, and a GPU flat index finds each vector's own row."""
    import faiss
    import numpy as np

    if not hasattr(faiss, "StandardGpuResources"):
        return f"faiss {faiss.__version__} is not the GPU build (faiss-cpu installed?)"
    if faiss.get_num_gpus() < 1:
        return f"faiss {faiss.__version__} sees no GPU"
    x = np.random.default_rng(0).standard_normal((64, 16)).astype(np.float32)
    index = faiss.GpuIndexFlatIP(faiss.StandardGpuResources(), 16)
    index.add(x)
    _, ids = index.search(x, 1)
    return None if (ids[:, 0] == np.arange(64)).all() else "a FAISS GPU index returns wrong neighbours"


def run_checks(gpu: bool) -> list[str]:
    """Every problem found (empty: all good)."""
    checks: list[tuple[str, Callable[[], str | None]]] = [("faiss packages", check_faiss_packages)]
    if gpu:
        checks += [("torch GPU", check_torch_gpu), ("CTranslate2 GPU", check_ctranslate2_gpu),
                   ("FAISS GPU", check_faiss_gpu)]
    problems = []
    for name, check in checks:
        try:
            problem = check()
        except Exception as e:  # noqa: BLE001 - an import or CUDA error is exactly what this reports
            problem = f"{type(e).__name__}: {e}"
        print(f"{name}: {'ok' if problem is None else 'FAILED: ' + problem}", flush=True)
        if problem is not None:
            problems.append(f"{name}: {problem}")
    return problems


def main(argv: list[str] | None = None) -> int:
    """Run the checks; 1 when any fails."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--gpu", action="store_true", help="also check that the GPU stack works on this node")
    problems = run_checks(p.parse_args(argv).gpu)
    if problems:
        print("xqg install check FAILED:\n  " + "\n  ".join(problems), file=sys.stderr, flush=True)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
