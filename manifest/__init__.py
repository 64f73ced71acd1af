"""Teams app manifest and app package for the MLOps bot (a leaf package: stdlib only)."""

from manifest.build import MANIFEST_VERSION, build_manifest, write_package

__all__ = ["MANIFEST_VERSION", "build_manifest", "write_package"]
