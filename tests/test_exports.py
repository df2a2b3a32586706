"""The public surfaces' exports (as httpx's ``test_exported_members``): every name a package lists in
``__all__`` is importable from it and is defined inside that package (not a third-party or another
package's object re-exported by accident), and the names the README's examples import keep working."""

from __future__ import annotations

import importlib
import types

import pytest

pytestmark = pytest.mark.unit

PACKAGES = ["streaming", "streaming.learning", "streaming.tracking", "features", "serving"]
# names a package exports on purpose from another Rivulet package: (package, name) -> where it is defined
REEXPORTED = {("streaming.learning", "DeadLetter"): "features.records"}  # the record a dead letter holds


@pytest.mark.parametrize("package", PACKAGES)
def test_every_exported_name_is_importable_and_defined_in_the_package(package: str) -> None:
    module = importlib.import_module(package)
    names = module.__all__
    assert names and len(set(names)) == len(names), names
    for name in names:
        namespace: dict[str, object] = {}
        exec(f"from {package} import {name}", namespace)  # the import a user writes
        value = namespace[name]
        assert value is getattr(module, name), name
        if isinstance(value, type | types.FunctionType):
            home = value.__module__
            expected = REEXPORTED.get((package, name))
            inside = home == package or home.startswith(f"{package}.")
            assert home == expected if expected else inside, (name, home)


def test_the_producer_sdk_imports_from_the_top() -> None:
    from streaming import Producer, Settings, TopicAdmin, producer_config
    from streaming.ingest.producer import Producer as SdkProducer
    from streaming.settings import Settings as TheSettings

    assert Producer is SdkProducer and Settings is TheSettings
    assert callable(TopicAdmin) and callable(producer_config)


def test_the_registries_are_exported_with_their_interface() -> None:
    from streaming.learning import MemoryRegistry, RedisRegistry, Registry

    assert issubclass(RedisRegistry, Registry) and issubclass(MemoryRegistry, Registry)
