"""The catalogs a run reads: ``--source NAME=PATH[:MAPPING.yaml]``, the named retailers'
flags, or the samples shipped inside the package, each resolved to a :class:`SourceConfig`
(its files found, its mapping loaded and checked against the taxonomy).
"""

from __future__ import annotations

import dataclasses
import os
import re
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from apache_beam.io.filesystems import FileSystems

from pipeline.flags import NAMED_RETAILERS, ConfigError
from pipeline.sources.image_uris import dump_folder
from schemas.mapping import MappingError, RetailerMapping, builtin_mapping_file, builtin_retailers, load_mapping

# --source NAME=PATH[:MAPPING]; MAPPING ends in .yaml/.yml (PATH may itself contain ':').
_SOURCE_RE = re.compile(r"^(?P<name>[A-Za-z0-9_-]+)=(?P<path>.+?)(?::(?P<mapping>(?:[a-z0-9]+://)?[^:]+\.ya?ml))?$")


def samples_dir() -> Path:
    """The sample catalogs and images shipped inside the package."""
    return Path(str(resources.files("pipeline").joinpath("samples")))


def default_inputs() -> dict[str, str]:
    folder = samples_dir()
    return {
        "zalando": str(folder / "zalando.jsonl"),
        "asos": str(folder / "asos.jsonl"),
        "farfetch": str(folder / "farfetch.*"),
    }


@dataclass(frozen=True)
class SourceConfig:
    retailer: str
    pattern: str
    mapping: RetailerMapping


def resolve_sources(opts, taxonomy, *, match_remote: bool = True) -> tuple[tuple[SourceConfig, ...], set[str]]:
    """The run's sources and the local folders their dumps are in (relative image paths resolve
    there). ``match_remote=False``: object-store patterns are taken as given, not matched."""
    requested: list[tuple[str, str, str | None]] = [
        (name, getattr(opts, name), None) for name in NAMED_RETAILERS if getattr(opts, name)]
    for spec in opts.source or ():
        match = _SOURCE_RE.match(spec)
        if not match:
            raise ConfigError(f"--source must look like NAME=PATH[:MAPPING.yaml], got {spec!r}")
        requested.append((match["name"], match["path"], match["mapping"]))
    if not requested:
        requested = [(name, path, None) for name, path in default_inputs().items()]
    sources = []
    roots: set[str] = set()
    for name, pattern, mapping_path in requested:
        mapping_file = mapping_path or builtin_mapping_file(name)
        if mapping_file is None:
            raise ConfigError(f"unknown retailer {name!r}: give a mapping file (--source {name}=PATH:MAPPING.yaml)"
                              f" or use one of {', '.join(builtin_retailers())}")
        try:
            mapping = load_mapping(mapping_file, taxonomy=taxonomy)
        except MappingError as exc:
            raise ConfigError(f"bad mapping file: {exc}") from exc
        if mapping.retailer != name:
            mapping = dataclasses.replace(mapping, retailer=name)
        files = _matches(pattern) if match_remote or "://" not in pattern else [pattern]
        if not files:
            raise ConfigError(f"input not found: {pattern} (for {name})")
        if all(os.path.isdir(f) for f in files if "://" not in f) and not any("://" in f for f in files):
            raise ConfigError(f"input is a folder, not a dump file: {pattern} (give a file or a glob)")
        roots.update(dump_folder(f) for f in files if "://" not in f)
        sources.append(SourceConfig(name, pattern, mapping))
    return tuple(sources), roots


def _matches(pattern: str) -> list[str]:
    try:
        return [m.path for r in FileSystems.match([pattern]) for m in r.metadata_list]
    except Exception:  # noqa: BLE001 - any filesystem failure means "not found" to the user
        return []
