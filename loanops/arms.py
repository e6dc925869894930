"""Which arm an applicant is in: a seeded hash of who they are, the same on every request.

The share of applicants who receive the challenger's decision is chosen by hashing the declared
applicant key (`loanops.schema.FeatureSchema.applicant_key`) or, where the schema declares none
or an application lacks it, the application itself in a canonical form (keys sorted, JSON), so
resubmitting the same application always lands in the same arm. A hash rather than a random draw
makes the arm reproducible from the log alone, with no state shared between API processes.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from typing import Any, Final, Literal

import orjson

Arm = Literal["champion", "challenger"]
_SCALE: Final = float(2**64)


def applicant_identity(application: Mapping[str, Any], applicant_key: str | None) -> bytes:
    """The bytes that identify the applicant: their key's value, else the whole application."""
    if applicant_key is not None and application.get(applicant_key) is not None:
        return b"key:" + orjson.dumps(application[applicant_key])
    return b"app:" + orjson.dumps(
        dict(application), option=orjson.OPT_SORT_KEYS | orjson.OPT_SERIALIZE_NUMPY
    )


def applicant_position(identity: bytes, seed: int) -> float:
    """A uniform position in [0, 1) for the applicant, fixed by the identity and the seed."""
    digest = hashlib.blake2b(identity, digest_size=8, key=str(seed).encode()).digest()
    return int.from_bytes(digest, "big") / _SCALE


def assign_arm(
    application: Mapping[str, Any],
    *,
    share: float,
    seed: int,
    applicant_key: str | None = None,
) -> Arm:
    """The arm whose decision the applicant receives.

    Args:
        application: The validated application.
        share: Share of applicants in the challenger's arm, in [0, 1]; 0 puts everyone with the
            champion (the challenger then only shadows).
        seed: Changes which applicants form the share, not its size.
        applicant_key: The schema's applicant key, if it declares one.

    Raises:
        ValueError: `share` lies outside [0, 1].
    """
    if not 0.0 <= share <= 1.0:
        raise ValueError(f"share must lie in [0, 1], not {share!r}")
    if share == 0.0:
        return "champion"
    position = applicant_position(applicant_identity(application, applicant_key), seed)
    return "challenger" if position < share else "champion"
