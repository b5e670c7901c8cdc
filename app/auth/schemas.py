from __future__ import annotations

import re
from datetime import datetime

from pydantic import BaseModel, ConfigDict, Field

from app.core.enums import Role

# Account names, imported identities' too: no control characters, no leading or double spaces.
NAME_PATTERN = re.compile(r"[\w.@+-]+( [\w.@+-]+)*")


class AnnotatorCreate(BaseModel):
    name: str = Field(min_length=1, max_length=100, pattern=f"^{NAME_PATTERN.pattern}$")
    role: Role = Role.annotator


class AnnotatorOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: int
    name: str
    role: Role
    active: bool
    external: bool = Field(description="An imported identity: holds no token, never signs in.")
    created_at: datetime


class AnnotatorWithToken(AnnotatorOut):
    token: str = Field(description="Shown once; store it now.")


class TokenCreate(BaseModel):
    label: str | None = Field(None, max_length=100)


class TokenOut(BaseModel):
    id: int
    prefix: str
    label: str | None
    created_at: datetime
    token: str | None = Field(None, description="Only present in the response that created it.")
