"""Distribution for storyboard: the SageMaker Pipeline that fine-tunes an image model on a film's characters.

What each image and use installs (one lock per image under ``containers/<image>/requirements.lock``, made by
``make lock`` from the lists below):

- base (``pip install .``): what the Lambda handlers import (``containers/lambda_handlers``): the Lambda image;
- ``processing``: video decoding, detection, captions and Evaluate's report (the processing image);
- ``sdk``: the SageMaker Python SDK, used only by ``pipeline/`` to compile and upsert the definition;
- ``train``: the LoRA fine-tune and the endpoint's handler (the training and inference images, whose torch
  comes from their PyTorch base image);
- ``cli``: everything the ``storyboard`` command imports (``processing`` + ``sdk`` + the local review page's Flask);
- ``dev``: the tests and linters, with ``cli`` and ``onnx`` (``make test`` installs ``.[dev,train]``).
"""

from setuptools import find_packages, setup

# The project's top-level packages: each image's Dockerfile copies every one of them
# (tests/test_dockerfiles.py checks it against the folders on disk).
PACKAGES = ("core", "steps", "evaluation", "pipeline", "containers")

# What the Lambda handlers import, at import time or when they run (Pillow: the training-set check reads image
# headers, steps.image_probes), and nothing else: the Lambda image installs only these.
BASE = [
    "boto3>=1.34,<2",
    "pydantic>=2.6,<3",
    "pyyaml>=6,<7",
    "pillow>=10,<13",
]
PROCESSING = [
    "av>=12,<19",
    "opencv-python-headless>=4.8,<6",
    "numpy>=1.26,<3",
    "scikit-learn>=1.4,<2",
    "scipy>=1.11,<2",
    "scikit-image>=0.22,<1",
    "tqdm>=4.66,<5",
    "jinja2>=3.1,<4",
    "matplotlib>=3.8,<4",
    "jsonschema>=4.20,<5",
]
SDK = ["sagemaker>=3.5,<4"]
# The local review page of `storyboard run --local` (steps/local_review/); 3.1 for TRUSTED_HOSTS
LOCAL = ["flask>=3.1,<4"]
ONNX = ["onnxruntime>=1.17,<2"]
# The LoRA fine-tune, Evaluate's generation and the inference handler. Install torch first with the build you
# want (the Makefile pins torch==2.13.0, a CPU build on the project's machines; the training and inference
# images take torch from their PyTorch base image, and their locks leave it out).
TRAIN = [
    "torch>=2.4",
    "diffusers>=0.30,<1",
    "peft>=0.11,<1",
    "transformers>=4.44,<6",
    "accelerate>=0.33,<2",
    "safetensors>=0.4,<1",
    "huggingface-hub>=0.24,<3",
    "numpy>=1.26,<3",
]
DEV = [
    "pytest>=8,<10",
    "ruff>=0.5",
    "moto[server]>=5,<6",
    "cfn-lint>=1.20,<2",  # tests/test_infra_template.py; checkov: pipeline/infra/requirements-checks.txt
    "imageio-ffmpeg>=0.5,<1",
    "scikit-video>=1.1.11",
    "onnx>=1.15,<2",
    "packaging>=23",  # tests/test_dockerfiles.py reads the locks
    "grimp>=3.5,<4",  # tests/test_layers.py: the import graph (import-linter's engine)
    "networkx>=3,<4",  # tests/test_layers.py: cycles as strongly connected components
    "dockerfile-parse>=2,<3",  # tests/test_dockerfiles.py reads the Dockerfiles (no Docker daemon in the tests)
    "uv>=0.5,<1",  # make lock: uv pip compile --generate-hashes for each image's Python and platform
    # the review page's browser test drives Debian's chromium (apt), no browser download
    "playwright>=1.45,<2",
]

setup(
    name="storyboard",
    version="0.1.0",
    description=(
        "SageMaker Pipeline from an animated film to an approved, fine-tuned image model (a LoRA on Stable "
        "Diffusion XL, or a Bedrock image model) that draws the film's characters consistently"
    ),
    python_requires=">=3.10",
    packages=find_packages(include=[p for name in PACKAGES for p in (name, f"{name}.*")]),
    package_data={
        "steps": ["templates/*.html", "templates/*.liquid", "templates/review/*.html"],
        "evaluation": ["templates/*.html", "schemas/*.json"],
        "pipeline": ["*.yaml", "infra/*.yaml", "infra/*.txt"],
    },
    install_requires=BASE,
    extras_require={
        "processing": PROCESSING,
        "sdk": SDK,
        "onnx": ONNX,
        "train": TRAIN,
        "cli": PROCESSING + SDK + LOCAL,
        "dev": DEV + PROCESSING + SDK + ONNX + LOCAL,
    },
    entry_points={"console_scripts": ["storyboard=pipeline.commands.cli:main"]},
)
