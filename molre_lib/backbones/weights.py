"""Offline weight resolution: never downloads, always says what to put where.

Order: ``weights=`` (a file or folder the user gives) -> the Hugging Face cache (``hf_hub_download(...,
local_files_only=True)``, i.e. what ``HF_HUB_OFFLINE=1`` would find) -> ``$MOLRE_WEIGHTS_DIR/<name>/``
(default ``~/.cache/molre/weights/<name>/``) -> for the demo backbone ``$MOLRE_CACHE_DIR/<name>/``.
A spec's ``weight_files`` lists the files of its official format; ``"a|b"`` means either file.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Optional, Union

if TYPE_CHECKING:
    from .registry import BackboneSpec


class MissingWeightsError(FileNotFoundError):
    """Raised when a backbone's weights are asked for but cannot be found locally."""


def cache_dir() -> Path:
    """``$MOLRE_CACHE_DIR`` (default ``~/.cache/molre``)."""
    return Path(os.environ.get("MOLRE_CACHE_DIR", "~/.cache/molre")).expanduser()


def weights_dir() -> Path:
    """``$MOLRE_WEIGHTS_DIR`` (default ``<cache_dir>/weights``): one sub-folder per backbone name."""
    env = os.environ.get("MOLRE_WEIGHTS_DIR")
    return Path(env).expanduser() if env else cache_dir() / "weights"


def local_dirs(spec: "BackboneSpec") -> list[Path]:
    dirs = [weights_dir() / spec.name]
    if spec.weight_format.startswith("molre"):  # built on this machine (molre pretrain-demo): the cache
        dirs.append(cache_dir() / spec.name)
    return dirs


def _alternatives(item: str) -> list[str]:
    return [a.strip() for a in item.split("|") if a.strip()]


def missing_files(folder: Path, spec: "BackboneSpec") -> list[str]:
    """Items of ``spec.weight_files`` not present in ``folder``."""
    return [item for item in spec.weight_files if not any((folder / a).is_file() for a in _alternatives(item))]


def _from_hf_cache(spec: "BackboneSpec") -> Optional[Path]:
    """Snapshot folder in the local HF cache holding every weight file, or None. No network access."""
    if not spec.hub_id:
        return None
    from huggingface_hub import hf_hub_download

    folder: Optional[Path] = None
    for item in spec.weight_files:
        found = None
        for name in _alternatives(item):
            try:
                found = Path(hf_hub_download(spec.hub_id, name, local_files_only=True))
                break
            except Exception:  # LocalEntryNotFoundError, EntryNotFoundError, offline errors: all mean "not cached"
                continue
        if found is None:
            return None
        if folder is not None and found.parent != folder:
            return None
        folder = found.parent
    return folder


def find_local_weights(spec: "BackboneSpec") -> Optional[Path]:
    """Where the weights of ``spec`` are on this machine (HF cache or local folders), or None."""
    cached = _from_hf_cache(spec)
    if cached is not None:
        return cached
    for d in local_dirs(spec):
        if d.is_dir() and not missing_files(d, spec):
            return d
    return None


def missing_message(spec: "BackboneSpec", looked: list[str]) -> str:
    files = ", ".join(" or ".join(_alternatives(i)) for i in spec.weight_files)
    target = local_dirs(spec)[-1] if spec.family == "demo" else local_dirs(spec)[0]
    lines = [
        f"No weights found for backbone {spec.name!r} ({spec.weight_format} format).",
        f"  files expected: {files}",
        "  looked in: " + "; ".join(looked),
    ]
    if spec.hub_id:
        plain = " ".join(_alternatives(i)[0] for i in spec.weight_files)
        lines.append(f"  get them on a connected machine: huggingface-cli download {spec.hub_id} {plain} "
                     f"--local-dir {spec.name}")
    elif spec.source:
        lines.append(f"  source: {spec.source}")
    lines.append(f"  then put the files in {target}/ (MOLRE_WEIGHTS_DIR changes the root) or pass weights=<file or folder>")
    return "\n".join(lines)


def resolve_weights(spec: "BackboneSpec", weights: Union[str, Path, None] = None) -> Path:
    """Local file or folder holding the weights of ``spec``; raises :class:`MissingWeightsError`."""
    if weights is not None:
        path = Path(weights).expanduser()
        if path.is_file():
            return path
        if path.is_dir():
            missing = missing_files(path, spec)
            if not missing:
                return path
            raise MissingWeightsError(missing_message(spec, [f"weights={path}: folder lacks {', '.join(missing)}"]))
        raise MissingWeightsError(missing_message(spec, [f"weights={path}: no such file or folder"]))
    looked = []
    cached = _from_hf_cache(spec)
    if cached is not None:
        return cached
    looked.append(f"Hugging Face cache ({spec.hub_id}, offline): not cached" if spec.hub_id
                  else "Hugging Face cache: no hub id for this backbone")
    for d in local_dirs(spec):
        if d.is_dir() and not missing_files(d, spec):
            return d
        looked.append(f"{d}: " + ("missing " + ", ".join(missing_files(d, spec)) if d.is_dir() else "no such folder"))
    msg = missing_message(spec, looked)
    if spec.family == "demo":
        msg += "\n  build it here with: molre pretrain-demo"
    raise MissingWeightsError(msg)


def weight_file(path: Path, spec: "BackboneSpec", item: int = 0) -> Path:
    """The file for ``spec.weight_files[item]`` inside folder ``path`` (or ``path`` itself if it is a file)."""
    if path.is_file():
        return path
    for name in _alternatives(spec.weight_files[item]):
        if (path / name).is_file():
            return path / name
    raise MissingWeightsError(missing_message(spec, [f"{path}: lacks {spec.weight_files[item]}"]))


def load_state_dict_file(path: Path) -> dict:
    """A state dict from ``.safetensors`` or a torch pickle (``weights_only=True``)."""
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(str(path))
    import torch

    return torch.load(str(path), map_location="cpu", weights_only=True)


def load_strict(module, state: dict, spec: "BackboneSpec", path: Path) -> None:
    """``load_state_dict(strict=True)`` with an error that names the backbone, file and key mismatch."""
    result_missing = sorted(set(module.state_dict()) - set(state))
    result_unexpected = sorted(set(state) - set(module.state_dict()))
    if result_missing or result_unexpected:
        raise ValueError(
            f"{spec.name}: {path} does not match the {spec.weight_format} layout: "
            f"{len(result_missing)} missing keys (e.g. {result_missing[:4]}), "
            f"{len(result_unexpected)} unexpected keys (e.g. {result_unexpected[:4]})"
        )
    try:
        module.load_state_dict(state, strict=True)
    except RuntimeError as err:
        raise ValueError(f"{spec.name}: {path} has the right keys but wrong shapes "
                         f"(a different model size?): {str(err)[:600]}") from None
