//! Content store, image index, layers, overlayfs snapshots, archives, garbage collection.
