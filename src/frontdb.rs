//! Front-end databases joining a node: the sources run beside the intake they feed.

use std::sync::Arc;

use govex_adapters::{
    frontdb::{DownSources, Source, SourceConfig, SourceMetrics},
    intake::Intake,
};
use govex_http::{failed, Context, StartError};

/// Starts one task per configured source, each polling its table into this process's intake
/// until the node stops. A database that is down is tried again in the background; nothing
/// here waits for one. What `/readyz` shows of them is shared on `cx` (`DownSources`).
pub fn start_sources(cx: &mut Context, sources: &[SourceConfig]) -> Result<(), StartError> {
    if sources.is_empty() {
        return Ok(());
    }
    let down = DownSources::default();
    let Some(intake) = cx.shared::<Arc<Intake>>() else {
        return Err(failed("front-end database sources")("they run with the intake component"));
    };
    let dir = cx.data_dir.join("frontdb");
    let db = govex_schemas::store::open_sled(&dir)
        .map_err(failed(format!("the sources' state {} cannot be opened", dir.display())))?;
    cx.stores.add("frontdb", &db);
    let metrics = SourceMetrics::register(&cx.metrics);
    for config in sources {
        let source = Source::new(config.clone(), intake.clone(), &db, metrics.clone(), &cx.time_zone)
            .map_err(|e| failed("a front-end database source")(e))?;
        let (stop, down) = (cx.stop.clone(), down.clone());
        cx.tasks.spawn(source.run(stop, down));
    }
    cx.share(down);
    Ok(())
}
