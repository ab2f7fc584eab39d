pub mod dir_backend;
