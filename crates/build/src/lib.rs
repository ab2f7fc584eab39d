//! Dockerfile parsing and the image builder with its layer cache.
//!
//! The pieces, in the order a build uses them:
//!
//! * [`context`]: the build context (a directory, or a tar stream unpacked to a temporary
//!   directory), `.dockerignore` ([`dockerignore`]) and safe in-root path resolution.
//! * [`parser`]: the Dockerfile model, built on the `parse-dockerfile` tokenizer, with
//!   line numbers on every error.
//! * [`expand`]: Docker's variable substitution and word splitting.
//! * [`builder`]: [`build`] runs the stages the target needs, step by step, with the
//!   layer cache, writing the classic builder's log.
//! * [`backend`]: the [`BuildBackend`] trait through which the builder resolves base
//!   images, runs `RUN` steps, writes `COPY` layers, commits and tags. The engine
//!   implements it with its store and runtime; this crate depends on neither.

#![warn(missing_docs)]

pub mod backend;
pub mod builder;
pub mod context;
pub mod dockerignore;
pub mod error;
pub mod expand;
pub mod parser;
mod predict;

pub use backend::{
    BackendError, BaseImage, BuildBackend, CacheKey, CopyItem, HealthConfig, HistoryEntry,
    ImageConfig, ImageState, RunResult, RunSpec,
};
pub use builder::{build, BuildOptions, BuildResult};
pub use context::{BuildContext, ContextError};
pub use dockerignore::DockerIgnore;
pub use error::BuildError;
pub use parser::{parse, Dockerfile};
