"""Stable Diffusion XL models for the LoRA fine-tune: check a base folder, build the tiny stand-in, load.

The base model is a diffusers-format SDXL folder (``model_index.json`` with ``_class_name``
``StableDiffusionXLPipeline``, plus ``unet/``, ``vae/``, ``text_encoder/``, ``text_encoder_2/``,
``tokenizer/``, ``tokenizer_2/``, ``scheduler/``), e.g. a copy of ``stabilityai/stable-diffusion-xl-base-1.0``.

Offline (no weights can be downloaded) :func:`build_tiny_sdxl` writes a folder of the same architecture
with random weights, the way diffusers' own tests build tiny pipelines; its marker file
``storyboard_stand_in.json`` makes :func:`is_stand_in` true. It tests the machinery, not the quality.

Training helpers: :func:`load_components` (frozen modules and tokenizers), :func:`add_unet_lora` (a peft
adapter on the UNet attention projections, as in diffusers' ``train_dreambooth_lora_sdxl.py``).
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from core.errors import InputError

if TYPE_CHECKING:
    import torch
    from diffusers import StableDiffusionXLPipeline

log = logging.getLogger(__name__)

SDXL_CLASS = "StableDiffusionXLPipeline"
STAND_IN_MARKER = "storyboard_stand_in.json"
LORA_WEIGHTS_NAME = "pytorch_lora_weights.safetensors"
REQUIRED_COMPONENTS = ("unet", "vae", "text_encoder", "text_encoder_2", "tokenizer", "tokenizer_2", "scheduler")
# The UNet attention projections the adapter wraps (diffusers' SDXL LoRA examples).
LORA_TARGET_MODULES = ("to_k", "to_q", "to_v", "to_out.0")
SDXL_BASE_LICENSE = "CreativeML Open RAIL++-M (stabilityai/stable-diffusion-xl-base-1.0)"
STAND_IN_LICENSE = "none: random weights built from configuration by storyboard (no trained model)"
STAND_IN_DESCRIPTION = ("tiny random-weight stand-in with the Stable Diffusion XL architecture "
                        "(tests the machinery, not the quality)")
# Words merged into whole tokens by the stand-in tokenizers, so a caption costs about as many tokens as
# with CLIP's real vocabulary (a byte per token would make every caption "too long").
_STAND_IN_WORDS = (
    "a an the and of in on at with from to by for is are his her its their this that one two three "
    "character characters frame scene film animated animation still style portrait close up close-up wide "
    "shot standing sitting walking running looking smiling holding bright dark light daylight night forest "
    "field grass tree trees sky cloud clouds water river house room background foreground white black red "
    "green blue yellow brown grey gray orange pink purple big small large little young old rabbit bunny "
    "girl boy woman man dragon bird squirrel sintel hair eyes face hand hands body cartoon fur ears"
).split()


@dataclass(frozen=True)
class BaseModelInfo:
    """What a base model folder holds.

    Attributes:
        path: the folder.
        class_name: ``model_index.json``'s ``_class_name`` (always ``StableDiffusionXLPipeline`` here).
        stand_in: the folder is :func:`build_tiny_sdxl`'s random-weight stand-in.
        description: one line for model cards and reports.
        license: the base model's licence (from the marker, the folder's README front matter, or SDXL's).
        diffusers_version: ``model_index.json``'s ``_diffusers_version`` (None where absent).
    """

    path: Path
    class_name: str
    stand_in: bool
    description: str
    license: str
    diffusers_version: str | None = None

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready dict (``path`` as a string)."""
        return {"path": str(self.path), "class_name": self.class_name, "stand_in": self.stand_in,
                "description": self.description, "license": self.license,
                "diffusers_version": self.diffusers_version}


def is_stand_in(path: str | Path) -> bool:
    """True when ``path`` holds the stand-in marker ``storyboard_stand_in.json`` with ``"stand_in": true``."""
    marker = Path(path) / STAND_IN_MARKER
    try:
        return bool(json.loads(marker.read_text(encoding="utf-8")).get("stand_in"))
    except (OSError, ValueError, AttributeError):
        return False


def _readme_license(folder: Path) -> str | None:
    """The ``license:`` value of a Hub model card's YAML front matter, if any."""
    readme = folder / "README.md"
    if not readme.is_file():
        return None
    lines = readme.read_text(encoding="utf-8", errors="replace").splitlines()
    if not lines or lines[0].strip() != "---":
        return None
    for line in lines[1:60]:
        if line.strip() == "---":
            break
        if line.startswith("license:"):
            return line.split(":", 1)[1].strip() or None
    return None


def check_base_model(path: str | Path) -> BaseModelInfo:
    """Check that ``path`` holds a diffusers Stable Diffusion XL model; cheap (reads JSON only).

    Raises:
        InputError: the folder is missing, has no ``model_index.json``, holds another architecture
            (``_class_name`` other than ``StableDiffusionXLPipeline``), or lacks a component folder.
    """
    folder = Path(path)
    fix = ("put a diffusers-format Stable Diffusion XL folder there (e.g. a copy of "
           "stabilityai/stable-diffusion-xl-base-1.0) or set the base_model_id hyperparameter")
    if not folder.is_dir():
        raise InputError(f"base model {folder}: no such folder; {fix}")
    index_path = folder / "model_index.json"
    if not index_path.is_file():
        raise InputError(f"base model {folder}: no model_index.json, so no diffusers model; {fix}")
    try:
        index = json.loads(index_path.read_text(encoding="utf-8"))
    except ValueError as err:
        raise InputError(f"base model {index_path}: not valid JSON ({err}); {fix}") from None
    class_name = str(index.get("_class_name", "")) if isinstance(index, dict) else ""
    if class_name != SDXL_CLASS:
        raise InputError(f"base model {folder}: model_index.json names {class_name or 'no class'!r}, not "
                         f"{SDXL_CLASS!r}; the LoRA fine-tune needs Stable Diffusion XL; {fix}")
    missing = [name for name in REQUIRED_COMPONENTS if not (folder / name).is_dir()]
    if missing:
        raise InputError(f"base model {folder}: component folder(s) missing: {', '.join(missing)}; {fix}")
    stand_in = is_stand_in(folder)
    if stand_in:
        description, license_ = STAND_IN_DESCRIPTION, STAND_IN_LICENSE
    else:
        description = f"Stable Diffusion XL ({folder.name})"
        license_ = _readme_license(folder) or SDXL_BASE_LICENSE
    return BaseModelInfo(folder, class_name, stand_in, description, license_, index.get("_diffusers_version"))


def resolve_base_model(channel: str | Path, base_model_id: str | None = None) -> BaseModelInfo:
    """The base model: the ``channel`` folder when it holds a diffusers model, else the Hub ``base_model_id``.

    Raises:
        InputError: the channel holds no diffusers model and no ``base_model_id`` is given, or the
            channel holds another architecture (:func:`check_base_model`).
    """
    channel = Path(channel)
    if (channel / "model_index.json").is_file() or not base_model_id:
        return check_base_model(channel)
    from huggingface_hub import snapshot_download

    local = snapshot_download(base_model_id, allow_patterns=["*.json", "*.txt", "*.md", "*.safetensors", "*.model"],
                              ignore_patterns=["*.fp16.safetensors", "*refiner*"])
    return check_base_model(local)


def resolve_device(device: str = "auto") -> str:
    """``"auto"`` -> ``"cuda"`` when torch sees a GPU, else ``"cpu"``; any other value is returned as is."""
    if device != "auto":
        return device
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def limit_threads_for_stand_in(path: str | Path, device: str) -> None:
    """On the CPU, run the tiny stand-in on one intra-op thread (``torch.set_num_threads(1)``).

    Its tensors are a few kilobytes, so intra-op parallelism costs more than it saves, and on a busy machine
    it costs far more: measured on 2 cores under load, 64 px generation took 14 s an image with 2 threads
    against 0.44 s with 1, and 20 training steps 25 s against 11 s. A real base model keeps torch's default.
    """
    if device == "cpu" and is_stand_in(path):
        import torch

        if torch.get_num_threads() != 1:
            log.info("tiny stand-in on the CPU: one torch thread")
            torch.set_num_threads(1)


def resolve_dtype(dtype: str, device: str) -> torch.dtype:
    """``auto`` (float16 on CUDA, float32 elsewhere), ``float32``/``fp32``, ``float16``/``fp16``, ``bfloat16``/``bf16``.

    Raises:
        InputError: another name.
    """
    import torch

    names = {"float32": torch.float32, "fp32": torch.float32, "no": torch.float32,
             "float16": torch.float16, "fp16": torch.float16, "bfloat16": torch.bfloat16, "bf16": torch.bfloat16}
    if dtype == "auto":
        return torch.float16 if device.startswith("cuda") else torch.float32
    if dtype not in names:
        raise InputError(f"dtype {dtype!r}: use one of auto, {', '.join(names)}")
    return names[dtype]


def load_pipeline(base: str | Path, lora_dir: str | Path | None = None, device: str = "auto",
                  dtype: str = "auto") -> StableDiffusionXLPipeline:
    """A ``StableDiffusionXLPipeline`` from the base folder, with the LoRA of ``lora_dir`` loaded if given.

    ``lora_dir`` holds ``pytorch_lora_weights.safetensors`` (diffusers format, as :mod:`steps.lora.export`
    writes). ``device`` ``auto`` = cuda if available else cpu; ``dtype`` see :func:`resolve_dtype`.

    Raises:
        InputError: the base is not an SDXL folder, or ``lora_dir`` has no LoRA weights file.
    """
    info = check_base_model(base)
    if lora_dir is not None and not (Path(lora_dir) / LORA_WEIGHTS_NAME).is_file():
        raise InputError(f"LoRA folder {lora_dir}: no {LORA_WEIGHTS_NAME}; pass the extracted model.tar.gz "
                         "of the training job (steps.lora.artifacts.unpack_model_artifacts)")
    from diffusers import StableDiffusionXLPipeline

    device = resolve_device(device)
    limit_threads_for_stand_in(info.path, device)
    pipe = StableDiffusionXLPipeline.from_pretrained(str(info.path), dtype=resolve_dtype(dtype, device))
    if lora_dir is not None:
        pipe.load_lora_weights(str(lora_dir), weight_name=LORA_WEIGHTS_NAME)
    pipe.set_progress_bar_config(disable=True)
    return pipe.to(device)


@dataclass
class Components:
    """The SDXL modules and tokenizers training needs (all frozen; the LoRA adapter is added to ``unet``)."""

    unet: Any
    vae: Any
    text_encoder: Any
    text_encoder_2: Any
    tokenizer: Any
    tokenizer_2: Any
    noise_scheduler: Any


def load_components(base: str | Path, device: str = "cpu", weight_dtype: torch.dtype | None = None) -> Components:
    """Load the base model's modules from their subfolders, frozen, on ``device``.

    The VAE stays in float32 (SDXL's VAE overflows in float16, as diffusers' examples note); the UNet and
    the text encoders take ``weight_dtype`` (float32 when None). The scheduler is a ``DDPMScheduler``
    from the base's scheduler configuration, as diffusers' training scripts use.
    """
    import torch
    from diffusers import AutoencoderKL, DDPMScheduler, UNet2DConditionModel
    from transformers import AutoTokenizer, CLIPTextModel, CLIPTextModelWithProjection

    limit_threads_for_stand_in(base, device)
    base = str(base)
    weight_dtype = weight_dtype or torch.float32
    comps = Components(
        unet=UNet2DConditionModel.from_pretrained(base, subfolder="unet", dtype=weight_dtype),
        vae=AutoencoderKL.from_pretrained(base, subfolder="vae", dtype=torch.float32),
        text_encoder=CLIPTextModel.from_pretrained(base, subfolder="text_encoder", dtype=weight_dtype),
        text_encoder_2=CLIPTextModelWithProjection.from_pretrained(base, subfolder="text_encoder_2",
                                                                   dtype=weight_dtype),
        tokenizer=AutoTokenizer.from_pretrained(base, subfolder="tokenizer"),
        tokenizer_2=AutoTokenizer.from_pretrained(base, subfolder="tokenizer_2"),
        noise_scheduler=DDPMScheduler.from_pretrained(base, subfolder="scheduler"),
    )
    for module in (comps.unet, comps.vae, comps.text_encoder, comps.text_encoder_2):
        module.requires_grad_(False)
        module.eval()
        module.to(device)
    return comps


def add_unet_lora(unet: Any, rank: int, alpha: int | None = None) -> list[Any]:
    """Add a peft LoRA adapter (rank ``rank``, ``lora_alpha`` = ``alpha`` or ``rank``, gaussian init) to the
    UNet's attention projections ``to_k, to_q, to_v, to_out.0``; return the trainable parameters (float32)."""
    import torch
    from peft import LoraConfig

    unet.add_adapter(LoraConfig(r=rank, lora_alpha=alpha or rank, init_lora_weights="gaussian",
                                target_modules=list(LORA_TARGET_MODULES)))
    params = [p for p in unet.parameters() if p.requires_grad]
    for p in params:  # trainable weights in float32 even under mixed precision (diffusers' cast_training_params)
        p.data = p.data.to(torch.float32)
    return params


# --- the tiny stand-in ------------------------------------------------------------------------------------


def _byte_vocab_and_merges() -> tuple[dict[str, int], list[str]]:
    """CLIP-style byte-level BPE vocabulary: 256 byte symbols with and without ``</w>``, word merges, specials."""
    from transformers.convert_slow_tokenizer import bytes_to_unicode

    symbols = list(bytes_to_unicode().values())
    vocab: dict[str, int] = {}
    for token in symbols + [s + "</w>" for s in symbols]:
        vocab[token] = len(vocab)
    ranks: dict[tuple[str, str], int] = {}
    for word in _STAND_IN_WORDS:  # BPE the word with the merges so far, then merge what is left, left to right
        pieces = list(word[:-1]) + [word[-1] + "</w>"]
        while len(pieces) > 1:
            pairs = [(ranks.get(pair, len(ranks)), i) for i, pair in enumerate(zip(pieces, pieces[1:]))]
            rank, i = min(pairs)
            if rank == len(ranks):  # no known merge applies: add one for the first pair
                ranks[(pieces[0], pieces[1])] = rank
                vocab.setdefault(pieces[0] + pieces[1], len(vocab))
                i = 0
            pieces = pieces[:i] + [pieces[i] + pieces[i + 1]] + pieces[i + 2:]
    merges = [f"{a} {b}" for (a, b), _ in sorted(ranks.items(), key=lambda item: item[1])]
    vocab["<|startoftext|>"] = len(vocab)
    vocab["<|endoftext|>"] = len(vocab)
    return vocab, merges


def _write_tokenizer(folder: Path, vocab: dict[str, int], merges: list[str], pad_token: str) -> Any:
    """Write vocab.json + merges.txt and save a ``CLIPTokenizer`` built from them (77 tokens) to ``folder``."""
    from transformers import CLIPTokenizer

    folder.mkdir(parents=True)
    (folder / "vocab.json").write_text(json.dumps(vocab, ensure_ascii=False), encoding="utf-8")
    (folder / "merges.txt").write_text("#version: 0.2\n" + "".join(m + "\n" for m in merges), encoding="utf-8")
    tokenizer = CLIPTokenizer(vocab=str(folder / "vocab.json"), merges=str(folder / "merges.txt"),
                              pad_token=pad_token, model_max_length=77)
    tokenizer.save_pretrained(str(folder))
    return tokenizer


def _tiny_pipeline(folder: Path, seed: int) -> int:
    """Build the stand-in's components with seeded random weights, save the pipeline; return UNet parameters."""
    import torch
    from diffusers import AutoencoderKL, EulerDiscreteScheduler, StableDiffusionXLPipeline, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

    vocab, merges = _byte_vocab_and_merges()
    tokenizer = _write_tokenizer(folder / "_tok1", vocab, merges, "<|endoftext|>")
    tokenizer_2 = _write_tokenizer(folder / "_tok2", vocab, merges, "!")
    hidden, time_dim = 32, 8
    text_config = dict(hidden_size=hidden, intermediate_size=37, num_attention_heads=4, num_hidden_layers=5,
                       vocab_size=len(vocab), max_position_embeddings=77, bos_token_id=vocab["<|startoftext|>"],
                       eos_token_id=vocab["<|endoftext|>"], pad_token_id=vocab["<|endoftext|>"],
                       hidden_act="gelu", projection_dim=hidden, layer_norm_eps=1e-5)
    torch.manual_seed(seed)
    unet = UNet2DConditionModel(
        sample_size=8, in_channels=4, out_channels=4, block_out_channels=(32, 64), layers_per_block=2,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"), up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        attention_head_dim=(2, 4), use_linear_projection=True, transformer_layers_per_block=(1, 2),
        norm_num_groups=8, cross_attention_dim=2 * hidden,  # text_encoder + text_encoder_2 hidden states, concatenated
        addition_embed_type="text_time", addition_time_embed_dim=time_dim,
        projection_class_embeddings_input_dim=hidden + 6 * time_dim)  # pooled text_encoder_2 + 6 time ids
    torch.manual_seed(seed + 1)
    vae = AutoencoderKL(in_channels=3, out_channels=3, latent_channels=4, block_out_channels=(8, 16, 32, 32),
                        down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4,
                        layers_per_block=1, norm_num_groups=8, sample_size=64, scaling_factor=0.13025,
                        force_upcast=True)
    torch.manual_seed(seed + 2)
    text_encoder = CLIPTextModel(CLIPTextConfig(**text_config))
    torch.manual_seed(seed + 3)
    text_encoder_2 = CLIPTextModelWithProjection(CLIPTextConfig(**text_config))
    scheduler = EulerDiscreteScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear",
                                       steps_offset=1, timestep_spacing="leading", prediction_type="epsilon")
    pipe = StableDiffusionXLPipeline(vae=vae, text_encoder=text_encoder, text_encoder_2=text_encoder_2,
                                     tokenizer=tokenizer, tokenizer_2=tokenizer_2, unet=unet, scheduler=scheduler,
                                     force_zeros_for_empty_prompt=True, add_watermarker=False)
    pipe.save_pretrained(str(folder))
    for source, target in (("_tok1", "tokenizer"), ("_tok2", "tokenizer_2")):
        for name in ("vocab.json", "merges.txt"):  # the slow tokenizer's files too, for older transformers
            shutil.copyfile(folder / source / name, folder / target / name)
        shutil.rmtree(folder / source)
    return sum(p.numel() for p in unet.parameters())


def build_tiny_sdxl(out_dir: str | Path, seed: int = 0) -> Path:
    """Write the tiny random-weight SDXL stand-in to ``out_dir`` and return it.

    Two CLIP text encoders (hidden size 32 each, the second with projection), a text-time UNet of about
    2 M parameters (cross-attention 64 = 32 + 32, added embedding 32 + 6 x 8), a 4-block VAE (scale 8, so
    the default 64 px image has 8 x 8 latents), SDXL's ``EulerDiscreteScheduler`` and offline byte-level
    CLIP tokenizers (77 tokens). Deterministic for ``seed``; idempotent: returns at once when the marker
    ``storyboard_stand_in.json`` (written last) is there. Built in a temporary sibling folder, then renamed.

    Raises:
        InputError: ``out_dir`` exists, is not empty and is not a complete stand-in.
    """
    out_dir = Path(out_dir)
    if is_stand_in(out_dir):
        return out_dir
    if out_dir.exists() and (not out_dir.is_dir() or any(out_dir.iterdir())):
        raise InputError(f"{out_dir}: exists and is not a complete stand-in model; remove it or pick another folder")
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", dir=out_dir.parent))
    try:
        unet_parameters = _tiny_pipeline(tmp, seed)
        marker = {"stand_in": True, "seed": seed, "description": STAND_IN_DESCRIPTION, "license": STAND_IN_LICENSE,
                  "unet_parameters": unet_parameters, "architecture": SDXL_CLASS, "default_resolution": 64}
        (tmp / STAND_IN_MARKER).write_text(json.dumps(marker, indent=2) + "\n", encoding="utf-8")
        tmp.chmod(0o755)  # mkdtemp makes it private
        if out_dir.is_dir():
            out_dir.rmdir()
        try:
            os.replace(tmp, out_dir)
        except OSError:
            if not is_stand_in(out_dir):  # another process did not finish it either
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return out_dir
