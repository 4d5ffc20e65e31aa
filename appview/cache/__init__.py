"""The AppView's cache-miss loader over the Valkey read model (docs/cache.md)."""

from appview.cache.loader import Loader, LoaderConfig
from appview.cache.singleflight import SingleFlight

__all__ = ["Loader", "LoaderConfig", "SingleFlight"]
