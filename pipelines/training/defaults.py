"""What a run trains when no candidates are named: they follow what the source carries.

Kept apart from :mod:`pipelines.training.candidates` (which imports scikit-learn) so that the command
line can say it in ``--help`` without importing a model library.
"""

from __future__ import annotations

#: What a default run trains (``train.models`` unset), by what the source carries: image-only candidates
#: always (colours, statistics, linear models on the ImageNet embedding and on its visual topics, averaged,
#: the fine-tuned CNN); with social or text columns a social-only baseline and two image + social fusions
#: (the CNN's ImageNet embedding, colours and quality beside the social and text features in gradient
#: boosting; the visual topics, the statistics' logs, the social numbers with gaps estimated from the
#: others, and the text in a linear model); with the 30-day views as well, seed 002's scale × shape.
IMAGE_MODELS = ("colors-svm", "stats-gb", "emb-topics-linear", "cnn")
SOCIAL_MODELS = ("social-gb", "social-emb-gb", "social-topics-linear")
SEQUENCE_MODELS = ("seq-kmeans",)
#: Columns that make a source "social": the user's reach and habits, the post's words.
SOCIAL_SOURCE_COLUMNS = ("followers", "account_age_days", "posts_per_week", "tag_count", "user_contacts",
                         "user_groups", "user_mean_views", "photo_count", "tags", "title", "description")


def default_models(manifest) -> list[str]:
    """The candidates a run trains when none are named: see :data:`IMAGE_MODELS` and the lines below it."""
    def present(column: str) -> bool:
        return column in manifest and bool(manifest[column].notna().any())

    models = list(IMAGE_MODELS)
    if any(present(c) for c in SOCIAL_SOURCE_COLUMNS):
        models += SOCIAL_MODELS
        if sum(present(f"views_d{d}") for d in range(1, 31)) >= 2:
            models += SEQUENCE_MODELS
    return models


#: One line for ``--help``: what a run trains when no ``--models`` is given.
DEFAULT_MODELS_HELP = (f"default: {', '.join(IMAGE_MODELS)}; with social or text columns also "
                       f"{', '.join(SOCIAL_MODELS)}; with views_d1..d30 as well, {', '.join(SEQUENCE_MODELS)}")
