//! Docker Engine API models, error kinds and version negotiation.
