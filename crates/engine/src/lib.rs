//! The domain: containers, images, volumes, networks, supervision, logs, events.
