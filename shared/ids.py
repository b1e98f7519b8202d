"""Identifier and money value rules shared by every API (see docs/API.md, "Conventions")."""

from __future__ import annotations

import re
from typing import Annotated

from pydantic import Field, StringConstraints

ID_PATTERN = r"^[A-Za-z0-9._:-]{1,128}$"
ID_RE = re.compile(ID_PATTERN)
CURRENCY_PATTERN = r"^[A-Z]{3}$"

# Bounded so that sums stay exact everywhere: pycrdt returns floats below 2**53 and panics
# far above; 10**15 minor units (10 trillion in a 2-decimal currency) is more than any bet.
AMOUNT_MINOR_MAX = 10**15

Id = Annotated[str, StringConstraints(pattern=ID_PATTERN, strict=True)]
Currency = Annotated[str, StringConstraints(pattern=CURRENCY_PATTERN, strict=True)]
PositiveMinor = Annotated[int, Field(strict=True, ge=1, le=AMOUNT_MINOR_MAX)]
NonNegativeMinor = Annotated[int, Field(strict=True, ge=0, le=AMOUNT_MINOR_MAX)]
SignedMinor = Annotated[int, Field(strict=True, ge=-AMOUNT_MINOR_MAX, le=AMOUNT_MINOR_MAX)]


# A provider's own transaction or request id (`external_ref` on money writes): the id charset, so
# it is safe in a URL path segment and in logs.
ExternalRef = Id
# `metadata` on money writes: a small map of text, bounded so the journal entry stays small.
METADATA_KEYS_MAX = 16
METADATA_KEY_PATTERN = r"^[A-Za-z0-9._:-]{1,64}$"
METADATA_VALUE_CHARS_MAX = 256
MetadataKey = Annotated[str, StringConstraints(pattern=METADATA_KEY_PATTERN, strict=True)]
MetadataValue = Annotated[str, StringConstraints(max_length=METADATA_VALUE_CHARS_MAX, strict=True)]
Metadata = Annotated[dict[MetadataKey, MetadataValue], Field(max_length=METADATA_KEYS_MAX)]


def is_id(value: object) -> bool:
    return isinstance(value, str) and ID_RE.fullmatch(value) is not None
