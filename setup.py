"""Distribution for storyboard: the SageMaker Pipeline that fine-tunes an image model on a film's characters."""

from setuptools import find_packages, setup

setup(
    name="storyboard",
    version="0.1.0",
    description=(
        "SageMaker Pipeline from an animated film to an approved, fine-tuned image model (a LoRA on Stable "
        "Diffusion XL, or a Bedrock image model) that draws the film's characters consistently"
    ),
    python_requires=">=3.10",
    packages=find_packages(include=["pipeline", "pipeline.*", "steps", "steps.*", "evaluation", "evaluation.*",
                                    "containers", "containers.*"]),
    package_data={
        "steps": ["templates/*.html", "templates/*.liquid", "templates/review/*.html"],
        "evaluation": ["templates/*.html", "schemas/*.json"],
        "pipeline": ["*.yaml", "infra/*.yaml", "infra/*.txt"],
    },
    install_requires=[
        "av>=12,<19",
        "opencv-python-headless>=4.8,<6",
        "numpy>=1.26,<3",
        "scikit-learn>=1.4,<2",
        "scipy>=1.11,<2",
        "scikit-image>=0.22,<1",
        "pillow>=10,<13",
        "pydantic>=2.6,<3",
        "pyyaml>=6,<7",
        "tqdm>=4.66,<5",
        "jinja2>=3.1,<4",
        "flask>=3.1,<4",  # the local review page (steps/local_review/); 3.1 for TRUSTED_HOSTS
        "boto3>=1.34,<2",
        "matplotlib>=3.8,<4",
        "jsonschema>=4.20,<5",
        "sagemaker>=3.5,<4",
    ],
    extras_require={
        "onnx": ["onnxruntime>=1.17,<2"],
        # The LoRA fine-tune, Evaluate's generation and the inference handler. Install torch first with the
        # build you want (the Makefile pins torch==2.13.0, a CPU build on the project's machines; the
        # training and inference images take torch from their PyTorch base image).
        "train": [
            "torch>=2.4",
            "diffusers>=0.30,<1",
            "peft>=0.11,<1",
            "transformers>=4.44,<6",
            "accelerate>=0.33,<2",
            "safetensors>=0.4,<1",
        ],
        "dev": [
            "pytest>=8,<10",
            "ruff>=0.5",
            "moto[server]>=5,<6",
            "cfn-lint>=1.20,<2",  # tests/test_infra_template.py; checkov: pipeline/infra/requirements-checks.txt
            "imageio-ffmpeg>=0.5,<1",
            "scikit-video>=1.1.11",
            "onnx>=1.15,<2",
            "onnxruntime>=1.17,<2",
            # the review page's browser test drives Debian's chromium (apt), no browser download
            "playwright>=1.45,<2",
        ],
    },
    entry_points={"console_scripts": ["storyboard=pipeline.cli:main"]},
)
