//! The node's events as log lines (the node actor logs every [`Event`] it drains).

use fleetcast_protocol::Event;

pub(super) fn log_event(e: &Event) {
    match e {
        Event::Accepted {
            app,
            seq,
            version,
            cached,
        } => {
            tracing::info!(%app, seq, %version, cached, "head accepted")
        }
        Event::Rejected {
            app, seq, reason, ..
        } => tracing::warn!(%app, seq, %reason, "head rejected"),
        Event::Activated { app, seq, version } => tracing::info!(%app, seq, %version, "active"),
        Event::ActivationFailed { app, seq, reason } => {
            tracing::warn!(%app, seq, %reason, "activation failed; previous release keeps serving")
        }
        Event::Prefetched { app, seq, version } => tracing::info!(
            %app, seq, %version,
            "prefetched: this wave leaves this agent out; the release is stored and compiled, the one before keeps serving"
        ),
        Event::Neighbor { node, up: true } => tracing::info!(peer = %node.short(), "neighbour up"),
        Event::Neighbor { node, up: false } => {
            tracing::info!(peer = %node.short(), "neighbour down")
        }
        Event::RootAdopted { version, epoch } => {
            tracing::info!(version, epoch, "fleet root adopted")
        }
        Event::RootRefused { reason } => {
            tracing::warn!(%reason, "fleet roots refused; the trusted root stays as it was")
        }
    }
}
