"""What the service's routes accept: an upload, bounded counts and early views, the caller's post id,
and one outcome row of ``/feedback``. BentoML builds the OpenAPI spec and the 4xx answers from these."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import Annotated, Any

from bentoml.validators import ContentType
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, StringConstraints, model_validator

from monitoring.request_store import POST_ID_CHARS
from pipelines.data.labels import MAX_COUNT
from pipelines.features.social import EARLY_VIEWS

Upload = Annotated[Path, ContentType("*/*")]
Count = Annotated[float | None, Field(ge=0, le=MAX_COUNT, allow_inf_nan=False)]
# An outcome's count: finite and at most MAX_COUNT; a negative one is the feedback suite's row-level reason.
Finite = Annotated[float | None, Field(le=MAX_COUNT, allow_inf_nan=False)]
EarlyViews = Annotated[list[Annotated[float, Field(ge=0, le=1e12, allow_inf_nan=False)]],
                       Field(min_length=1, max_length=len(EARLY_VIEWS))]


def _integer_as_text(value: Any) -> Any:
    """BentoML reads a form field as JSON when it can, so a numeric post id arrives as an int."""
    return str(value) if isinstance(value, int) and not isinstance(value, bool) else value


def _number_as_text(value: Any) -> Any:
    """BentoML reads a form field as JSON when it can: a tag ``2019`` arrives as a number and stays a tag."""
    return str(value) if isinstance(value, int | float) and not isinstance(value, bool) else value


# A post's words (seed 002's text features): tags separated by ``|``, spaces or commas (``tag_count`` counts).
Tags = Annotated[str, BeforeValidator(_number_as_text), StringConstraints(max_length=2_000)]
Text = Annotated[str, StringConstraints(max_length=5_000)]

# The caller's own id for a post, stored with the prediction so that its engagement can be joined later.
PostId = Annotated[str, BeforeValidator(_integer_as_text),
                   StringConstraints(min_length=1, max_length=POST_ID_CHARS, pattern=r"^[\x21-\x7e]+$")]


class Outcome(BaseModel):
    """One post's engagement so far, naming its prediction by ``prediction_id`` or the caller's ``post_id``.
    Counts must be finite and at most :data:`MAX_COUNT` (else the request is a 400); the feedback suite
    rejects the other bad rows (a negative count, a count that fell, …) each with its reasons."""

    model_config = ConfigDict(extra="forbid")

    prediction_id: Annotated[str, StringConstraints(pattern=r"^[0-9a-f]{32}$")] | None = None
    post_id: PostId | None = None
    observed_at: datetime | None = None
    posted_at: datetime | None = None
    likes: Finite = None
    views: Finite = None
    favorites: Finite = None
    comments: Finite = None
    followers: Finite = None
    daily_views: Annotated[list[Annotated[float, Field(le=MAX_COUNT, allow_inf_nan=False)]],
                           Field(max_length=30)] | None = None  # views_d1, views_d2, … so far

    @model_validator(mode="after")
    def _names_a_prediction(self) -> Outcome:
        if self.prediction_id is None and self.post_id is None:
            raise ValueError("each row needs a prediction_id or a post_id")
        return self

    def fields(self) -> dict:
        daily = {f"views_d{d}": v for d, v in enumerate(self.daily_views or [], start=1)}
        return {**self.model_dump(exclude={"daily_views"}, exclude_none=True), **daily}
