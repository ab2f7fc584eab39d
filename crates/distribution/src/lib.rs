//! OCI registry client and registry server.
//!
//! - [`server`]: an OCI distribution-spec registry (axum router) over a content store on
//!   disk plus per-repository metadata; `berth registry serve` runs it.
//! - [`client`]: [`client::RegistryClient`] pulls images into and pushes them out of the
//!   `store` crate's image store (auth, resumable parallel downloads, mounts).
//! - [`names`], [`media`]: repository name / tag / digest syntax and manifest media types,
//!   shared by both sides.

#![deny(missing_docs)]

pub mod client;
pub mod media;
pub mod names;
pub mod server;
