"""The ``[console]`` section of the unit's config: where the console listens and what the referral letter says.

No I/O here (the unit's config rule). The address must be a literal IP address of this unit: 127.0.0.1 (the
default: only a browser on the unit itself) or the unit's own hotspot address; "all interfaces" (0.0.0.0, ::) is
refused so the console never appears on a network the clinic did not choose.
"""

from __future__ import annotations

import ipaddress
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8080


class ConsoleConfig(BaseModel):
    """The operator console (docs/console.md)."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    enabled: bool = Field(False, description="the kiosk starts the console beside the screening loop")
    host: str = Field(DEFAULT_HOST, description="IP address to listen on: 127.0.0.1, or the unit's own hotspot "
                                                "address; never 0.0.0.0")
    port: int = Field(DEFAULT_PORT, ge=1024, le=65535, description="TCP port")
    clinic_name: str = Field("Screening clinic", min_length=1, max_length=120,
                             description="the clinic's name, printed on every page and referral letter")
    clinic_contact: str = Field("", max_length=300, description="the clinic's address or telephone (letter header)")
    refer_to: str = Field("the nearest eye clinic (ask the screening clinic for the address)", min_length=1,
                          max_length=500, description="where a referred patient should go (referral letter)")
    paper: Literal["A4", "A5"] = Field("A4", description="default paper size of the referral letter")
    idle_minutes: int = Field(15, ge=1, le=240, description="a login expires after this long without a request")
    max_hours: int = Field(12, ge=1, le=72, description="a login expires this long after it started, in any case")
    credentials: str | None = Field(None, description="file with the salted password hashes; default "
                                                      "<records folder>/console/credentials.json")

    @field_validator("host")
    @classmethod
    def _literal_unit_address(cls, value: str) -> str:
        try:
            address = ipaddress.ip_address(value)
        except ValueError:
            raise ValueError("must be an IP address such as 127.0.0.1 or the unit's hotspot address") from None
        if address.is_unspecified:
            raise ValueError("0.0.0.0 / :: would listen on every network; name this unit's own address")
        return value
