"""What several commands load the same way: the model specs, checked against the feature views, and the
registry as a reader."""

from __future__ import annotations

from features.definitions import load_views
from streaming.cli.common import fail
from streaming.clients import registry_reader
from streaming.errors import StreamingError
from streaming.learning.registry import RedisRegistry
from streaming.learning.spec import ModelSpec, SpecError, load_specs
from streaming.settings import Settings

__all__ = ["checked_specs", "registry_of"]


def registry_of(settings: Settings) -> RedisRegistry:
    """The registry as a reader (verifies with RIVULET_VERIFY_KEYS, cannot sign); exits clearly without."""
    try:
        return registry_reader(settings)
    except StreamingError as exc:  # no verify keys, a bad key
        fail(str(exc))


def checked_specs(settings: Settings, module: str | None = None) -> list[ModelSpec]:
    """The model specs of ``module`` (default RIVULET_MODELS_MODULE), checked against the feature views:
    :class:`SpecError` (or the views' :class:`~features.errors.FeaturesError`) when one cannot work."""
    specs = load_specs(module or settings.models_module)
    known = {v.name: v for v in load_views(settings.features_module)}
    for spec in specs:
        view = known.get(spec.view)
        if view is None:
            raise SpecError(spec.name, f"unknown view {spec.view!r}; views: {sorted(known)}")
        declared = [*(d.name for d in view.derived), *view.feature_names]
        # a view that includes the events' own fields has names only the data knows: they are checked on
        # the first record
        spec.check(None if view.include_fields else declared)
    return specs
