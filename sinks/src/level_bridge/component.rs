//! The level bridges joining a node: one link per neighbour `[bridge]` configures.

use std::sync::Arc;

use govex_bus::dlq::DeadLetterQueue;
use govex_http::{failed, Context, StartError};

use super::{config::BridgeConfig, links, Bridge, BridgeMetrics};

/// Runs a link from the parent's cluster (down-routes) and from each child's (up-routes)
/// into this node's cluster.
pub fn build(cx: &mut Context, config: &BridgeConfig) -> Result<(), StartError> {
    let links = links(cx.division, cx.bus.config(), config).map_err(failed("the bridge links cannot be made"))?;
    if links.is_empty() {
        tracing::debug!("[bridge] configures no parent or children: nothing to forward");
        return Ok(());
    }
    let bridge = Arc::new(Bridge::new(
        cx.division,
        cx.bus.clone(),
        cx.registry.clone(),
        config.clone(),
        BridgeMetrics::register(&cx.metrics),
        DeadLetterQueue::new(cx.bus.producer().clone(), "level-bridge", &cx.metrics),
    ));
    for link in links {
        let (bridge, stop, prefix, catalog) =
            (bridge.clone(), cx.stop.clone(), cx.group_prefix.clone(), cx.catalog.clone());
        tracing::info!(link = %link.name, remote = %link.bootstrap, topics = ?link.topics, "bridge link starting");
        let name = link.name.clone();
        cx.spawn("bridge", async move {
            bridge.run_link(link, &prefix, catalog, stop).await.map(drop).map_err(|e| format!("link {name}: {e}"))
        });
    }
    Ok(())
}
