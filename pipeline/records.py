"""Typed records that flow through the pipeline: the single source of truth for field names.

The Parquet schemas in :mod:`schemas.tables` are derived from these dataclasses, so a field
is declared once, here. Stages add information with :func:`dataclasses.replace`.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from pipeline.pickled import PickledByValues

# Bound on the raw payload kept in a dead-letter row, in characters.
RAW_RECORD_LIMIT = 2000


class Stage(enum.StrEnum):
    READ = "read"
    FETCH = "fetch"
    DECODE = "decode"
    INFERENCE = "inference"


class Reason(enum.StrEnum):
    """Machine-readable dead-letter reason codes."""

    MALFORMED_JSON = "MALFORMED_JSON"
    MALFORMED_ROW = "MALFORMED_ROW"
    MALFORMED_XML = "MALFORMED_XML"
    NOT_AN_OBJECT = "NOT_AN_OBJECT"
    INVALID_ENCODING = "INVALID_ENCODING"
    MISSING_FIELD = "MISSING_FIELD"
    NO_IMAGES = "NO_IMAGES"
    FORBIDDEN_URI = "FORBIDDEN_URI"
    EMPTY_FILE = "EMPTY_FILE"
    TRUNCATED_FILE = "TRUNCATED_FILE"
    UNREADABLE_FILE = "UNREADABLE_FILE"
    FILE_TOO_LARGE = "FILE_TOO_LARGE"
    LINE_TOO_LONG = "LINE_TOO_LONG"
    INVALID_RECORD = "INVALID_RECORD"  # a record that broke the parser in an unforeseen way
    # Image fetch and decode.
    HTTP_4XX = "HTTP_4XX"
    HTTP_5XX = "HTTP_5XX"
    TIMEOUT = "TIMEOUT"
    CONNECTION_ERROR = "CONNECTION_ERROR"
    TOO_MANY_REDIRECTS = "TOO_MANY_REDIRECTS"
    FETCH_ERROR = "FETCH_ERROR"  # an unforeseen failure while fetching (message says which)
    NOT_FOUND = "NOT_FOUND"
    TOO_LARGE = "TOO_LARGE"
    NOT_AN_IMAGE = "NOT_AN_IMAGE"
    UNSUPPORTED_FORMAT = "UNSUPPORTED_FORMAT"
    CORRUPT_IMAGE = "CORRUPT_IMAGE"
    DECOMPRESSION_BOMB = "DECOMPRESSION_BOMB"
    TOO_SMALL = "TOO_SMALL"
    DECODE_ERROR = "DECODE_ERROR"  # an unforeseen failure while decoding (message says which)
    INFERENCE_ERROR = "INFERENCE_ERROR"  # the model raised on the batch holding this image


class ImageRole(enum.StrEnum):
    MODEL = "MODEL"  # worn by a person
    PACKSHOT = "PACKSHOT"  # product alone
    DETAIL = "DETAIL"  # close-up
    OTHER = "OTHER"


class CategoryRule(enum.StrEnum):
    EXACT = "EXACT"
    PREFIX = "PREFIX"
    KEYWORD = "KEYWORD"
    OUT_OF_SCOPE = "OUT_OF_SCOPE"
    UNMAPPED = "UNMAPPED"  # the retailer gave values, none matched a rule
    MISSING = "MISSING"  # the retailer gave no category and no title keyword matched


@dataclass(frozen=True)
class ImageRecord(PickledByValues):
    """One product image, normalized from any retailer format (one row of the images table)."""

    retailer: str
    product_id: str
    image_position: int
    image_uri: str
    source_file: str
    source_line: int
    variant_id: str | None = None
    group_id: str | None = None  # a retailer-side grouping kept together in cross-validation (e.g. contributor)
    image_role: str | None = None
    image_role_raw: str | None = None
    is_primary: bool | None = None
    title: str | None = None
    brand: str | None = None
    raw_category: tuple[str, ...] = ()
    raw_gender: tuple[str, ...] = ()
    raw_age_group: tuple[str, ...] = ()
    raw_colour: tuple[str, ...] = ()
    source_offset: int | None = None
    # Taxonomy mapping (MapTaxonomy).
    category: str | None = None
    category_path: str | None = None
    category_level1: str | None = None
    category_level2: str | None = None
    category_rule: str | None = None
    category_match: str | None = None
    gender: str | None = None
    age_group: str | None = None
    retailer_colour: str | None = None  # the retailer's colour on the colour vocabulary (a training label)
    # Image fetch and decode (LoadImages). Every field from here on is derived from the image: an
    # incremental run keeps them from the stored row of an unchanged image (pipeline/stored.py).
    image_width: int | None = None
    image_height: int | None = None
    image_format: str | None = None
    image_bytes: int | None = None
    image_sha256: str | None = None
    http_status: int | None = None
    fetch_attempts: int | None = None
    fetch_ms: float | None = None
    cache_hit: bool | None = None
    image_validator: str | None = None  # ETag / Last-Modified, or size + mtime (pipeline/images/validators.py)
    enriched_with: str | None = None  # taxonomy version, image settings, model ids (pipeline/reuse.py)
    reuse_status: str | None = None  # ReuseStatus (pipeline/stored.py): REUSED, RESCORED or NEW
    image_phash: str | None = None  # 144-bit perceptual hash, 36 hex digits (mirror-invariant)
    dominant_colour: str | None = None  # foreground colour, white background discounted
    dominant_colour_no_skin: str | None = None  # the same with skin tones discounted (person shots)
    # Model scores (ScoreImages); the category vocabulary is in the table metadata and manifest.
    person_score: float | None = None
    predicted_category: str | None = None
    category_top3: tuple[str, ...] = ()
    category_top3_scores: tuple[float, ...] = ()
    category_scores: tuple[float, ...] = ()
    predicted_gender: str | None = None
    gender_scores: tuple[float, ...] = ()
    predicted_age_group: str | None = None
    age_group_scores: tuple[float, ...] = ()
    predicted_colour: str | None = None  # the colour model's (a multi-task head); dominant_colour is the heuristic
    colour_scores: tuple[float, ...] = ()
    person_model: str | None = None
    category_model: str | None = None
    gender_model: str | None = None
    age_group_model: str | None = None
    colour_model: str | None = None

    def dedupe_key(self) -> tuple[str, str, str]:
        return (self.retailer, self.product_id, self.image_uri)

    def order_key(self) -> tuple:
        return (self.source_file, self.source_line, self.image_position)


@dataclass(frozen=True)
class ProductRecord(PickledByValues):
    """One product: its images' scores aggregated with the cumulative max (products table)."""

    retailer: str
    product_id: str
    image_count: int
    person_image_count: int
    title: str | None = None
    brand: str | None = None
    # Every variant / SKU id that mapped to the product, also those whose image rows were de-duplicated.
    variant_ids: tuple[str, ...] = ()
    category: str | None = None  # null when below the minimum confidence (flagged)
    category_score: float | None = None
    category_low_confidence: bool = False
    category_person_filtered: bool = False  # person images ignored: the product has packshots
    category_path: str | None = None
    category_level1: str | None = None
    category_level2: str | None = None
    category_scores: tuple[float, ...] = ()
    gender: str | None = None
    gender_score: float | None = None
    gender_low_confidence: bool = False
    age_group: str | None = None  # from an age-group model (null without one), like gender
    age_group_score: float | None = None
    age_group_low_confidence: bool = False
    retailer_category: str | None = None  # the retailer's own label, mapped to the taxonomy
    retailer_gender: str | None = None
    retailer_age_group: str | None = None
    # What the product's title names (pipeline.title_evidence): a witness beside the retailer's fields.
    title_category: str | None = None
    title_gender: str | None = None
    title_age_group: str | None = None
    category_agreement: str | None = None  # the verdict: pipeline.label_quality.Verdict
    gender_agreement: str | None = None
    age_group_agreement: str | None = None
    # The estimated probability that the retailer's label is wrong (pipeline.label_quality.Judge).
    category_error_probability: float | None = None
    gender_error_probability: float | None = None
    age_group_error_probability: float | None = None
    category_model: str | None = None
    gender_model: str | None = None
    person_model: str | None = None
    age_group_model: str | None = None
    # Catalog quality.
    primary_image_uri: str | None = None
    primary_image_rule: str | None = None  # PrimaryRule
    image_vote_share: float | None = None  # share of the scored images whose own top-1 is the product category
    # The colour model's label when one runs (cumulative max over the non-person images, else all);
    # else the primary image's dominant colour (skin discounted on person shots).
    colour: str | None = None
    colour_score: float | None = None  # null for the heuristic
    colour_model: str | None = None
    duplicate_group: str | None = None  # near-duplicate images with other products: the group's smallest member
    duplicate_group_size: int = 0  # products in the group (0: none)
    needs_review: bool = False
    review_reasons: tuple[str, ...] = ()  # ReviewReason values
    review_priority: float | None = None  # within the tier, 0..1 (pipeline.product_rules.review)
    review_tier: int | None = None  # ReviewTier: 1 (LABEL_ERROR) is the most urgent
    review_tier_name: str | None = None


# The review table: the products with needs_review, with these columns, each file in queue order.
REVIEW_COLUMNS = (
    "retailer", "product_id", "review_tier", "review_tier_name", "review_priority", "review_reasons", "title",
    "image_count", "primary_image_uri", *(f"{prefix}{name}{suffix}" for name in ("category", "gender", "age_group")
                                          for prefix, suffix in (("", ""), ("", "_score"), ("retailer_", ""),
                                                                 ("title_", ""), ("", "_agreement"),
                                                                 ("", "_error_probability"))),
    "image_vote_share")


def queue_key(product: ProductRecord) -> tuple:
    """The review queue's order: by tier, then the highest priority first."""
    return (product.review_tier, -product.review_priority, product.product_id)


@dataclass(frozen=True)
class DeadLetter:
    """A record (or part of one) that could not be processed, and why (dead_letter table)."""

    retailer: str
    stage: str
    reason: str
    message: str
    source_file: str | None = None
    source_line: int | None = None
    source_offset: int | None = None
    product_id: str | None = None
    image_uri: str | None = None
    raw: str | None = None
    http_status: int | None = None
    attempts: int | None = None

    @classmethod
    def make(cls, *, retailer: str, stage: Stage, reason: Reason, message: str,
             raw: str | bytes | None = None, **kw) -> DeadLetter:
        if isinstance(raw, bytes):
            raw = raw.decode("utf-8", errors="replace")
        if raw is not None and len(raw) > RAW_RECORD_LIMIT:
            raw = raw[:RAW_RECORD_LIMIT] + "...[truncated]"
        return cls(retailer=retailer, stage=stage.value, reason=reason.value,
                   message=message[:RAW_RECORD_LIMIT], raw=raw, **kw)


@dataclass(frozen=True)
class FileStats:
    """What a source decoder saw in one dump file (feeds the run manifest)."""

    retailer: str
    source_file: str
    units: int = 0  # lines / rows / items / array elements read
    blank: int = 0  # blank lines skipped (not records)
    products: int = 0  # units that yielded at least one image record
    records: int = 0  # image records emitted
    errors: int = 0  # dead-letter rows emitted
    aborted: bool = False  # a fault stopped the framer: the rest of the file was not read


@dataclass(frozen=True)
class Duplicate:
    """An image record dropped because (retailer, product, image URI) was already seen."""

    retailer: str
    product_id: str
    image_uri: str
    source_file: str
    source_line: int
    kept_source_file: str
    kept_source_line: int


@dataclass(frozen=True)
class WrittenFile:
    """A Parquet file staged by a sink, committed at the end of the run."""

    table: str
    partition: str  # e.g. "run_date=2026-11-27/retailer=asos"
    path: str
    rows: int
    shard: int = 0
