//! The e-licence component joining a node: its store, its sink and its API.

use std::{sync::Arc, time::Duration};

use govex_http::{failed, Context, StartError};

use super::{
    api::{self, ApiMetrics, LicenceApi},
    sink::{LicenceSink, SinkMetrics},
    LicenceStore, TOPIC,
};
use crate::use_log::{self, AuditConfig, Replication};

/// Opens the store (see [`store`]), serves the licence, holder, verify and use-log routes,
/// and runs the sink.
pub async fn build(cx: &mut Context, audit: &AuditConfig) -> Result<(), StartError> {
    let store = store(cx, audit).await?;
    let resource = cx.catalog.current().by_topic(TOPIC).cloned().ok_or_else(|| StartError {
        what: "the catalogue has no entry for e-licences".into(),
        source: format!("add a resource for {TOPIC} to the catalogue").into(),
    })?;
    let licence_api = Arc::new(LicenceApi {
        store: store.clone(),
        tokens: cx.tokens.clone(),
        resource,
        catalog: cx.catalog.clone(),
        metrics: ApiMetrics::register(&cx.metrics),
        zone: cx.time_zone.clone(),
    });
    cx.serve(api::router(licence_api), api::ROUTES);
    let sink = LicenceSink::new(store, cx.registry.clone(), SinkMetrics::register(&cx.metrics));
    crate::sink::start(cx, Arc::new(sink));
    Ok(())
}

/// The node's e-licence store, opened under `data_dir/elicense` by the first component that
/// asks (the e-licence store, or the dossier: its database holds the use log both write, so
/// that every read of personal data lands in one chain).
///
/// The use log is restored from its topic where the disk lacks entries (a lost or older
/// volume), then replicated before every answer and anchored every
/// `audit.anchor_interval_secs` and at shutdown.
pub async fn store(cx: &mut Context, audit: &AuditConfig) -> Result<LicenceStore, StartError> {
    if let Some(store) = cx.shared::<LicenceStore>() {
        return Ok(store);
    }
    let dir = cx.data_dir.join("elicense");
    let store =
        LicenceStore::open(&dir).map_err(failed(format!("e-licence store {} cannot be opened", dir.display())))?;
    cx.stores.add("elicense", store.db());
    let writer = audit.writer(cx.division);
    let use_log = store.use_log().clone();
    use_log.usage().register(&cx.metrics);
    let counting = use_log.clone();
    cx.tasks.spawn(async move {
        match tokio::task::spawn_blocking(move || counting.count_past_usage()).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => tracing::error!(error = %e, "the usage statistics could not be counted from the use log"),
            Err(e) => tracing::error!(error = %e, "counting the usage statistics stopped"),
        }
    });
    let (replicated, _) = use_log::replicated(&cx.bus, &cx.registry, &writer)
        .await
        .map_err(failed("the replicated use log cannot be read"))?;
    let restored = use_log.restore(&replicated).map_err(failed("the use log cannot be restored from its topic"))?;
    if restored > 0 {
        tracing::warn!(restored, writer, "use-log entries missing on disk were restored from the topic");
    }
    let replication = Replication::new(&cx.bus, &cx.registry, writer, cx.division)
        .await
        .map_err(failed("the use log cannot be replicated"))?;
    use_log.replicate(Arc::new(replication));
    // Entries the topic lacks (see `UseLog::restore`) go back now, not with the next use.
    use_log.flush().await.map_err(failed("the use log cannot be written back to its topic"))?;
    let (stop, every) = (cx.stop.clone(), Duration::from_secs(audit.anchor_interval_secs.max(1)));
    cx.tasks.spawn(async move {
        let mut ticks = tokio::time::interval(every);
        loop {
            let stopping = tokio::select! {
                _ = stop.cancelled() => true,
                _ = ticks.tick() => false,
            };
            match use_log.anchor().await {
                Ok(Some(anchor)) if stopping => tracing::info!(seq = anchor.seq, "use log anchored at shutdown"),
                Ok(_) => {}
                Err(e) => tracing::warn!(error = %e, "the use log could not be anchored; trying again"),
            }
            if stopping {
                return;
            }
        }
    });
    cx.share(store.clone());
    Ok(store)
}
