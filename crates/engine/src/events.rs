//! The event bus: every state change of a container or image is published as a Docker
//! [`api::EventMessage`] to all current subscribers (`GET /events`).

use api::{EventActor, EventMessage, StringMap};
use tokio::sync::broadcast;

/// Publishes events to subscribers; cheap to clone.
#[derive(Clone)]
pub struct Events {
    tx: broadcast::Sender<EventMessage>,
}

impl Default for Events {
    fn default() -> Self {
        Events::new()
    }
}

impl Events {
    /// A bus keeping up to 1024 unread events per subscriber.
    pub fn new() -> Events {
        let (tx, _) = broadcast::channel(1024);
        Events { tx }
    }

    /// Subscribes to future events.
    pub fn subscribe(&self) -> broadcast::Receiver<EventMessage> {
        self.tx.subscribe()
    }

    /// The number of subscribers.
    pub fn listeners(&self) -> usize {
        self.tx.receiver_count()
    }

    /// Publishes an event of `kind` (`container`, `image`) and `action` about `id`.
    pub fn publish(&self, kind: &str, action: &str, id: &str, attributes: StringMap) {
        if self.tx.receiver_count() == 0 {
            return;
        }
        let now = chrono::Utc::now();
        let nanos = now.timestamp_nanos_opt().unwrap_or(0);
        let legacy = kind == "container" || kind == "image";
        let msg = EventMessage {
            kind: kind.to_string(),
            action: action.to_string(),
            status: legacy.then(|| action.to_string()),
            id: legacy.then(|| id.to_string()),
            from: attributes.get("image").cloned(),
            actor: EventActor {
                id: id.to_string(),
                attributes,
            },
            scope: "local".to_string(),
            time: now.timestamp(),
            time_nano: nanos,
        };
        let _ = self.tx.send(msg);
    }
}
