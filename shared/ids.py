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


def is_id(value: object) -> bool:
    return isinstance(value, str) and ID_RE.fullmatch(value) is not None
