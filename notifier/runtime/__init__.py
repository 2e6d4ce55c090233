"""The only place that touches a dependency's internals: one module per
dependency, each version-guarded with a tested public-API fallback."""
