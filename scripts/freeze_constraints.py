"""Print exact versions of fashion-enrich's dependency closure in this environment.

    python scripts/freeze_constraints.py > runners/constraints.txt

Walks the requirements of setup.py's install_requires (with apache-beam's [gcp] extra) through
installed distributions' metadata; the worker image (Dockerfile) installs with these pins, so
workers run exactly what the tests ran.
"""

import re
from importlib import metadata

from packaging.requirements import Requirement

ROOTS = ["apache-beam", "tensorflow", "tensorflow-transform", "tensorflow-hub", "tf-keras", "pyarrow", "pandas",
         "requests", "pillow", "pyyaml", "numpy", "matplotlib", "onnxruntime", "tf2onnx", "onnx"]
EXTRAS = {"apache-beam": {"gcp"}}
ENVIRONMENT = {"python_version": "3.11", "sys_platform": "linux", "platform_system": "Linux",
               "platform_machine": "x86_64"}


def closure() -> dict[str, str]:
    seen: dict[str, tuple[str, set[str]]] = {}
    stack = [(name, EXTRAS.get(name, set())) for name in ROOTS]
    while stack:
        name, extras = stack.pop()
        key = re.sub(r"[-_.]+", "-", name).lower()
        try:
            dist = metadata.distribution(name)
        except metadata.PackageNotFoundError:
            continue
        previous = seen.get(key)
        if previous is not None and extras <= previous[1]:
            continue
        seen[key] = (dist.version, (previous[1] if previous else set()) | extras)
        for text in dist.requires or []:
            req = Requirement(text)
            if req.marker and not any(req.marker.evaluate({**ENVIRONMENT, "extra": e}) for e in (extras or {""})):
                continue
            stack.append((req.name, set(req.extras)))
    return {k: v[0] for k, v in sorted(seen.items())}


if __name__ == "__main__":
    print("# Exact versions of fashion-enrich's dependency closure, as tested (Python 3.11, linux x86_64).")
    print("# The worker image installs with these constraints: python -m pip install -c runners/constraints.txt .")
    print("# Regenerate from a tested environment: python scripts/freeze_constraints.py > runners/constraints.txt")
    for name, version in closure().items():
        print(f"{name}=={version}")
