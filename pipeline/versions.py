"""Versions recorded in every manifest and output file."""

from __future__ import annotations

from importlib import metadata

PACKAGE = "fashion-enrich"


def package_version() -> str:
    try:
        return metadata.version(PACKAGE)
    except metadata.PackageNotFoundError:
        return "0+unknown"


def versions() -> dict[str, str]:
    from pipeline.grouping import GROUPING_VERSION
    from schemas.tables import SCHEMA_VERSION
    from schemas.taxonomy import load_taxonomy

    out = {"fashion_enrich": package_version(), "schema": SCHEMA_VERSION,
           "taxonomy": str(load_taxonomy().version), "near_duplicates": GROUPING_VERSION}
    for dist in ("apache-beam", "pyarrow"):
        try:
            out[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            out[dist] = "missing"
    return out
