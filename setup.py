from setuptools import find_packages, setup

setup(
    name="kd-plugin",
    version="0.1.0",
    description="Knowledge distillation for CIFAR-10 classifiers: a plugin and runtime for IntelLabs Distiller",
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    # The original's schedules stay at the repository's top level and ship as package data kd_plugin/schedules.
    packages=[*find_packages(include=["kd_plugin", "kd_plugin.*"]), "kd_plugin.schedules"],
    package_dir={"kd_plugin.schedules": "schedules"},
    package_data={"kd_plugin.schedules": ["*.yaml"]},
    python_requires=">=3.10",  # PEP 604 annotations (`list | None`) are evaluated at import time
    install_requires=["torch>=2.1", "torchvision", "pyyaml>=5.4", "numpy", "tqdm", "pydantic>=2"],
    extras_require={
        "plots": ["matplotlib"],
        # ruff and mypy as .ci/run runs them (ruff.toml, mypy.ini): pinned to a minor release, whose rules stay put
        "dev": ["pytest", "pytest-xdist", "matplotlib", "ruff~=0.17.6", "mypy~=2.4.1"],
        "ray": ["ray[tune]"],
        "export": ["onnx", "onnxruntime", "onnxscript", "safetensors"],
        # the peer the benchmarks race (benchmarks/kd_throughput.py, time_to_accuracy.py); needs torch >= 2.12
        "bench": ["torchdistill"],
    },
    entry_points={
        "console_scripts": [
            "kd-plugin=kd_plugin.cli.kd_plugin:main",
            "compress_classifier=kd_plugin.cli.compress_classifier:main",
            "main_KD_CIFAR10=kd_plugin.cli.main_kd_cifar10:main",
        ]
    },
)
