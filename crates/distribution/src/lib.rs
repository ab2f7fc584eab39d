//! OCI registry client and registry server.
