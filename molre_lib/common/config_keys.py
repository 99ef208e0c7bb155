"""The one check behind every ``Config.from_dict``: an unknown key is an error that names it.

Config files and notebook parameters are typed by hand; a misspelt key silently falling back to its
default would train the wrong model, so every config dataclass refuses keys it does not define.
"""
from __future__ import annotations

import dataclasses
from typing import Any, Mapping


def check_known_keys(cls: type, data: Mapping[str, Any], where: str = "") -> None:
    """Raise ``ValueError`` naming the first key of ``data`` that is not a field of dataclass ``cls``; with
    ``where`` (the file section, e.g. ``"sweep.yaml: tune"``) the message starts with it."""
    known = {f.name for f in dataclasses.fields(cls)}
    for key in data:
        if key not in known:
            prefix = f"{where}: " if where else ""
            raise ValueError(f"{prefix}Unknown {cls.__name__} key: {key!r} (known: {', '.join(sorted(known))})")
