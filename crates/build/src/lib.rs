//! Dockerfile parsing and the image builder with its layer cache.
