"""The one typed settings object: every tunable of the stack, read from the environment.

Nested groups are set with a double underscore, e.g. ``POPULARITY_TRAIN__EPOCHS=3``.
Server locations keep the libraries' own variables (``MLFLOW_TRACKING_URI``,
``PREFECT_API_URL``) so that a team can point the stack at its servers without learning ours.
"""

from __future__ import annotations

import os
from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import AliasChoices, BaseModel, Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


class SplitSettings(BaseModel):
    train: float = 0.70
    val: float = 0.15
    # the remainder is the frozen test split


class DemoSettings(BaseModel):
    size: int = 2000
    image_px: int = 128
    seed: int = 7
    users: int = 200
    probe_brightness: float = 0.4  # the demo's shifted probe batch: its held-out images this much darker


class DownloadSettings(BaseModel):
    concurrency: int = 16
    per_host_per_second: float = 8.0  # 0 disables the per-host limit
    timeout_s: float = 20.0
    retries: int = 4
    max_bytes: int = 20 * 1024 * 1024
    allow_private: bool = False
    backoff_s: float = 0.5  # first retry's wait; doubles each attempt, half of it random (jitter)
    max_backoff_s: float = 30.0
    max_retry_after_s: float = 120.0  # a longer Retry-After gives up instead of stalling the run
    deadline_s: float = 300.0  # one attempt, headers to last byte: a trickling server cannot hold a slot
    max_redirects: int = 5
    batch_size: int = 256  # items downloaded and decoded together (one task on a Dask runner)
    user_agent: str = "popularity-collector/0.1"


class SourceSettings(BaseModel):
    # A manifest's row may name a file outside the manifest's folder (``..``, absolute, a symlink out).
    allow_outside_paths: bool = False


class SnapshotSettings(BaseModel):
    # A ``.tmp-*`` folder of a killed collection is removed at once when its owner is gone, else after this.
    stale_tmp_minutes: float = 60.0


class ImageLimits(BaseModel):
    max_bytes: int = 20 * 1024 * 1024
    max_pixels: int = 50_000_000
    min_side: int = 32
    # Every image a model sees is decoded to fit this square (a JPEG at the smallest DCT scale that
    # covers it, then shrunk): snapshot images in training and featurisation, uploads in serving. One
    # decode, one picture, train or serve; no feature looks at more than 512 px (faces_px).
    model_side: int = 512


class FeatureSettings(BaseModel):
    colors_k: int = 5
    colors_px: int = 64
    colors_iters: int = 25  # Lloyd steps: 25 bring palettes within 10 RGB of seed 000 (bench)
    # The Lloyd steps see every colors_stride-th pixel of every colors_stride-th row of the colors_px
    # thumbnail, then one step and the weights all of them: 2 is about 3x faster than 1, its palettes
    # within 3 RGB of 1's on average (6 at worst; tests/unit/test_colour_path.py)
    colors_stride: int = Field(2, ge=1, le=8)
    batch_size: int = 256
    faces_px: int = 512
    faces_min_confidence: float = 2.0  # Haar level weight: the --require-faces threshold
    embed_backbone: str = "mobilenet_v2"
    embed_px: int = 128
    embed_flip: bool = True


class TrainSettings(BaseModel):
    # None: the candidates follow the data (pipelines.training.candidates.default_models)
    models: list[str] | None = None
    backbone: str = "mobilenet_v2"
    # the demo's own image size: at 96 px the CNN lost the detail that made it the demo's best on
    # validation (0.823 vs 0.850 ROC AUC at 128, README)
    image_px: int = 128
    # "random-crop" (seed 001): load at image_px·256/227, a random image_px crop + flip, the centre crop to predict;
    # "resized": a random resized crop of 60–100% of the area, the whole square resized to predict
    crop: Literal["random-crop", "resized"] = "random-crop"
    # a CNN scores the mean of the photo and its mirror (test-time augmentation): flip-stable by construction
    flip_average: bool = True
    epochs: int = 4
    batch_size: int = 32
    lr: float = 3e-4
    head_lr_multiplier: float = 10.0
    step_size: int = 3
    patience: int = 2
    # the share of the training split (grouped, as the splits are) a CNN holds out for its early stopping and
    # calibration: the validation split, where candidates are compared, stays unseen by every fit
    early_stopping_share: float = 0.15
    early_stopping_min_rows: int = 50  # fewer would choose the epoch by noise: the fit then stops on its own rows
    seed: int = 42
    quick_epochs: int = 1
    split: str = "group"  # or "time": the latest posts are the test split
    repeats: int = 0  # K repeated grouped 9:1 splits (seed 002), reported as mean ± std
    require_faces: bool = False
    tune: bool = False
    tune_budget_s: float = 120.0
    tune_trials: int = 30
    svm_fixed_c: float = 1e5  # the colors-svm-fixed candidate's C (seed 000's polynomial SVM)
    svm_c_grid: list[float] = [1e-6, 1e-4, 1e-2, 1e-1, 1.0, 10.0, 1e3, 1e5]  # seed 003's sweep
    forest_trees: int = 500
    pca_components: int = 32
    text_components: int = 16  # a post's words (tags, title, description): SVD components of their TF-IDF
    cv_folds: int = 5
    sequence_clusters: int = 50
    sequence_bandwidth: float = 0.53
    nowcast_days: int = 3  # the early days of views the nowcast candidate reads (1 … 7)
    ordinal_bins: int = 10
    ranking_margin: float = 1.0


class PromotionSettings(BaseModel):
    margin: float = 0.01
    floor_roc_auc: float = 0.6
    floor_spearman: float = 0.1
    latency_budget_ms: float = 250.0
    flip_tolerance: float = 0.25
    jpeg_tolerance: float = 0.25
    # Live evidence (needs serving.shadow_share above 0): above 0, a challenger replaces a champion only once
    # this many of its shadowed requests have an outcome and they show it no worse (0: off).
    live_outcomes: int = Field(0, ge=0)
    # After a promotion the replaced champion is scored in shadow this long, and restored when the new one
    # does worse on the same live outcomes by performance.decay_margin (0: no watch, no automatic rollback).
    rollback_watch_hours: float = Field(48.0, ge=0.0)
    # "required": a challenger that passed the gate is promoted only once a person approves it in the Prefect
    # UI (the promote flow pauses with its model card); a rejection or no answer within approval_timeout_s
    # refuses it. "none": the gate's verdict is final.
    approval: Literal["none", "required"] = "none"
    approval_timeout_s: int = Field(24 * 3600, ge=1, le=30 * 24 * 3600)


class ServingSettings(BaseModel):
    port: int = 3000
    host: str = "127.0.0.1"
    max_batch_size: int = 32
    max_latency_ms: int = 10_000  # the batch queue sheds load (503) past this; batches form adaptively below it
    # The API waits this long for the scorer's reply, then asks again once; a second wait is answered 503 +
    # Retry-After, inside BentoML's 60 s traffic timeout (its 504). Above max_latency_ms: shedding answers first.
    scorer_timeout_s: float = Field(20.0, gt=0)
    batching: bool = True  # off only to measure what adaptive batching buys (bench/)
    # The API's calls to the scorer in flight per worker; requests arriving meanwhile share the next call
    # (serving.scorer_calls.Coalescing). Two keep the scorer busy: one batch runs while the next queues.
    scorer_calls_in_flight: int = Field(2, ge=1)
    gpu: bool = False
    max_body_bytes: int = 20 * 1024 * 1024
    max_header_bytes: int = 16 * 1024  # all request headers together; above it a request gets 431
    max_batch_images: int = 64
    compare_max_images: int = 10
    max_feedback_rows: int = 1000  # rows of one POST /feedback
    feedback_per_minute: int = 60  # POST /feedback requests per client address a minute (bursts up to it); 0: off
    max_pixels: int = 16_000_000  # an upload's declared pixels; below the collector's cap (images.max_pixels)
    # A JPEG is decoded at a reduced DCT scale (1/8 of each side at most), so its cost follows the model's
    # side, not its declared size: phones' and cameras' 24–50 MP photos are served. A progressive JPEG
    # still holds its DCT coefficients whole while it decodes (about 3 bytes a pixel: 150 MB at 50 MP,
    # against 9 MB for a baseline one), so the cap stays at the collector's 50 MP.
    max_jpeg_pixels: int = 50_000_000
    # One request's body, first byte to last: a client trickling its body is answered 408 after it, and
    # holds no admission or scoring slot meanwhile (the body is read before the request is admitted).
    body_deadline_s: float = 30.0
    decode_concurrency: int = 2  # uploads decoded at once per API worker: bounds decoding memory
    max_concurrency: int = 32  # requests in flight per API worker; more get 429 at once
    # Uploaded images in flight per API worker (a request counts its images); more get 429 at once, so the
    # admitted ones are scored within the batch queue's latency bound rather than all shed with 503.
    max_images_in_flight: int = 128
    # The drift profile costs about 12 ms an image, more than scoring: with up to this many requests in
    # flight every image is profiled; above it each is, at random, with probability this / in flight,
    # and its record carries that rate.
    profile_in_flight: int = 8
    # What runs a CNN (the champion, the drift profile's trunk) on CPU: its ONNX graph exported at training in
    # ONNX Runtime, or eager torch. CUDA, a model without a graph and a graph that failed parity keep torch.
    runtime: Literal["onnx", "torch"] = "onnx"
    threads: int = 0  # ONNX Runtime's intra-op threads per network (0: one per physical core)
    bento_model: str | None = None  # the packed BentoML model tag; set inside a built Bento
    watch_interval_s: float = 10.0  # how often the service asks the registry for a new champion (0: never)
    # A champion version that failed to load is tried again after watch_interval_s, doubling up to this.
    load_retry_max_s: float = 3600.0
    # Shadow scoring: above 0, each replica also loads the registry's challenger and scores this share of
    # answered requests with it after answering, storing its score beside the champion's (0: off).
    shadow_share: float = Field(0.0, ge=0.0, le=1.0)


class DriftSettings(BaseModel):
    window: int = 200
    window_hours: float | None = None  # only requests of the last N hours count (None: the last `window`, however old)
    min_requests: int = 50
    # chosen by bench/bench_drift.py on pool A and the choosing shifts, reported on others (README)
    p_value: float = 0.02
    drifted_share_threshold: float = 0.25  # 3 of the 12 monitored features
    projection_dims: int = 8  # principal components of the CNN embedding that the monitor compares (by MMD)
    mmd_permutations: int = 200
    cooldown_hours: float = 24.0
    refused_retry_hours: float = 1.0  # a retraining the gate refused holds the cooldown this long, not a whole one
    log_max_bytes: int = 10 * 1024 * 1024
    log_backups: int = 5
    # Retraining, on drift or on its schedule: the source to collect fresh data from (required: the
    # champion's own snapshot is never retrained on), the candidates (None: train.models), how briefly.
    retrain_source: str | None = None
    retrain_models: list[str] | None = None
    retrain_quick: bool = False
    retrain_cron: str = "0 3 * * 1"
    monitor_cron: str = "0 * * * *"


class PerformanceSettings(BaseModel):
    """Realized engagement (feedback) against what was predicted: how much, how sure, when to retrain."""

    window: int = 200  # the newest predictions with an outcome that one check judges
    min_outcomes: int = 50  # fewer: no decision
    bucket_hours: float = 24.0  # the metric-over-time panel: one point per this many hours of predictions
    bootstrap: int = 500  # resamples for each confidence interval
    confidence: float = 0.95
    # Decay: the realized metric's whole interval lies more than this below the champion's test metric.
    decay_margin: float = 0.1
    retrain_with_feedback: bool = True  # retraining also learns from the feedback rows that came with images


class AlertSettings(BaseModel):
    """Alerts: Prefect automations that notify a webhook (drift, decay, a refused or failed retraining, a
    rollback, a stuck flow run); none are registered while ``webhook_url`` is unset."""

    webhook_url: SecretStr | None = None  # a chat or incident webhook may carry its token in the URL
    stuck_minutes: float = Field(default=15.0, ge=5.0)  # a flow run silent this long (no heartbeat) is stuck

    @field_validator("webhook_url", mode="after")
    @classmethod
    def _http_only(cls, url: SecretStr | None) -> SecretStr | None:
        if url is None or not url.get_secret_value().strip():
            return None
        if not url.get_secret_value().lower().startswith(("http://", "https://")):
            raise ValueError("the alert webhook must be an http(s) URL")
        return url


class StoreSettings(BaseModel):
    """Where served requests and the retrain cooldown live: a database every replica and host shares
    (the stack's PostgreSQL), or, unset, a JSON Lines log and a SQLite file under the home."""

    url: SecretStr | None = None  # a SQLAlchemy URL; it may hold a password, so it is a secret
    flush_rows: int = 256  # the service writes its request records in batches, off the request path
    flush_interval_s: float = 1.0
    queue_max_rows: int = 50_000  # beyond it records are dropped and counted, never the request


class StackSettings(BaseModel):
    """``popularity stack up``: the team's servers as local processes under the home."""

    postgres_url: SecretStr = SecretStr("postgresql+psycopg2://postgres@127.0.0.1:5432/postgres")
    database_prefix: str = "popularity"  # databases <prefix>_mlflow, <prefix>_prefect, <prefix>_monitoring
    mlflow_port: int = 5000
    prefect_port: int = 4200
    pool: str = "popularity"
    start_timeout_s: float = 180.0
    # `popularity worker` and the flow runs it starts yield the CPU to the service on a shared machine
    # (os.nice: 10 gives a busy service about nine tenths of a contended core; 0 keeps the priority).
    worker_niceness: int = Field(default=10, ge=0, le=19)


class ValidationSettings(BaseModel):
    # Rows quarantined by validation plus source rows rejected at collection (bad values, missing images):
    # above this share of the source a run stops and prints the reasons by count.
    max_quarantine_share: float = 0.05
    missing_share_warn: float = 0.5  # an optional input (followers, tags, …) missing in more rows is a warning
    class_balance_warn: float = 0.2
    class_balance_fail: float = 0.05
    split_share_tolerance: float = 0.15  # a split's share may differ this much from settings.splits (warning)
    feature_range_tolerance: float = 0.1  # a feature may leave its training range by this share of it (warning)


class RegistrySettings(BaseModel):
    # MLflow's own defaults (7 retries, 120 s) keep a command waiting minutes on a registry that is down.
    http_retries: int = 2
    http_timeout_s: int = 10
    # A command's first question to an MLflow server (``promote``, ``model``): one try, answered within this
    # or the registry is reported unreachable, before any flow or Prefect server starts.
    probe_timeout_s: float = 3.0


def _user_cache() -> Path:
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "popularity"


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="POPULARITY_", env_nested_delimiter="__", extra="ignore")

    home: Path = Path(".popularity")
    # what every home of a machine can share, derived from installed packages (the drift profile's
    # trunk as an ONNX graph); POPULARITY_CACHE_DIR, by default the user's cache folder
    cache_dir: Path = Field(default_factory=_user_cache)
    mlflow_tracking_uri: str | None = Field(
        default=None, validation_alias=AliasChoices("MLFLOW_TRACKING_URI", "POPULARITY_MLFLOW_TRACKING_URI")
    )
    api_key: SecretStr | None = None
    task: str = "binary"
    model_prefix: str = "popularity"
    splits: SplitSettings = SplitSettings()
    demo: DemoSettings = DemoSettings()
    download: DownloadSettings = DownloadSettings()
    sources: SourceSettings = SourceSettings()
    snapshots: SnapshotSettings = SnapshotSettings()
    images: ImageLimits = ImageLimits()
    features: FeatureSettings = FeatureSettings()
    train: TrainSettings = TrainSettings()
    promotion: PromotionSettings = PromotionSettings()
    serving: ServingSettings = ServingSettings()
    drift: DriftSettings = DriftSettings()
    validation: ValidationSettings = ValidationSettings()
    registry: RegistrySettings = RegistrySettings()
    performance: PerformanceSettings = PerformanceSettings()
    store: StoreSettings = StoreSettings()
    stack: StackSettings = StackSettings()
    alerts: AlertSettings = AlertSettings()

    @field_validator("api_key", mode="after")
    @classmethod
    def _empty_key_is_no_key(cls, key: SecretStr | None) -> SecretStr | None:
        """``POPULARITY_API_KEY=`` (or blanks) is no key, everywhere: never a key that anyone matches."""
        return key if key is not None and key.get_secret_value().strip() else None

    @property
    def root(self) -> Path:
        return self.home.resolve()

    @property
    def datasets_dir(self) -> Path:
        return self.root / "datasets"

    @property
    def features_dir(self) -> Path:
        return self.root / "features"

    @property
    def artifacts_dir(self) -> Path:
        return self.root / "mlartifacts"

    @property
    def monitoring_dir(self) -> Path:
        return self.root / "monitoring"

    @property
    def feedback_dir(self) -> Path:
        return self.monitoring_dir / "feedback"

    @property
    def quarantine_dir(self) -> Path:
        return self.root / "quarantine"

    @property
    def gx_dir(self) -> Path:
        return self.root / "gx"

    @property
    def tracking_uri(self) -> str:
        return self.mlflow_tracking_uri or f"sqlite:///{self.root / 'mlflow.db'}"

    def with_group(self, group: str, **changes) -> Settings:
        """A copy with some settings of one group changed, the environment untouched."""
        return self.model_copy(update={group: getattr(self, group).model_copy(update=changes)})

    def for_collection(self, allow_private: bool = False, allow_outside_paths: bool = False) -> Settings:
        """The settings of one collection with its command-line permissions (``--allow-private``,
        ``--allow-outside-paths``): a flag widens what the settings allow, its absence never narrows it."""
        return (self.with_group("download", allow_private=self.download.allow_private or allow_private)
                .with_group("sources", allow_outside_paths=self.sources.allow_outside_paths or allow_outside_paths))

    def model_name(self, task: str | None = None) -> str:
        return f"{self.model_prefix}-{task or self.task}"

    def export_environment(self) -> None:
        """Point MLflow, Prefect and BentoML at the home before any of them is imported."""
        self.root.mkdir(parents=True, exist_ok=True)
        os.environ.setdefault("MLFLOW_TRACKING_URI", self.tracking_uri)
        os.environ.setdefault("PREFECT_HOME", str(self.root / "prefect"))
        os.environ.setdefault("BENTOML_HOME", str(self.root / "bentoml"))
        # The ephemeral API's 20 s start-up default is too short on a busy 2-core machine.
        os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "120")
        os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
        os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")
        os.environ.setdefault("DO_NOT_TRACK", "1")
        os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
        os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", str(self.registry.http_retries))
        os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", str(self.registry.http_timeout_s))


@lru_cache
def get_settings() -> Settings:
    """The settings read from the environment, once per process: for entry points only (the CLI, the
    service, a flow run); library code takes its settings as an argument."""
    return Settings()


def load_settings() -> Settings:
    """An entry point's settings, with MLflow, Prefect and BentoML pointed at the home."""
    settings = get_settings()
    settings.export_environment()
    return settings
