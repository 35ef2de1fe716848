//! Case statistics joining a node: their store under `data_dir/cases` and their sink; they
//! are read as metrics.

use std::sync::Arc;

use govex_http::{failed, Context, StartError};

use super::CaseStats;

/// Opens the store and runs the sink.
pub fn build(cx: &mut Context) -> Result<(), StartError> {
    let dir = cx.data_dir.join("cases");
    let stats = CaseStats::open(&dir, cx.registry.clone(), &cx.metrics)
        .map_err(failed(format!("case statistics store {} cannot be opened", dir.display())))?;
    cx.stores.add("cases", stats.db());
    crate::sink::start(cx, Arc::new(stats));
    Ok(())
}
