//! The shared views joining a node: their store, their sink and their API.

use std::sync::Arc;

use govex_http::{failed, Context, StartError};

use super::{
    api::{self, DossierApi},
    DossierSink, DossierStore,
};
use crate::use_log::AuditConfig;

/// Opens the dossier store under `data_dir/dossier` (and the e-licence store, whose use log
/// records the dossier's reads of personal data), serves the dossier routes, and runs the sink.
pub async fn build(
    cx: &mut Context,
    audit: &AuditConfig,
    governance: &crate::governance::GovernanceConfig,
    down_tables: &[crate::down_table::DownTableConfig],
) -> Result<(), StartError> {
    let licences = crate::elicense::component::store(cx, audit).await?;
    let dir = cx.data_dir.join("dossier");
    let store =
        DossierStore::open(&dir).map_err(failed(format!("dossier store {} cannot be opened", dir.display())))?;
    cx.stores.add("dossier", store.db());
    let (subscriptions, objections) =
        crate::governance::component::build(cx, governance, licences.use_log().clone(), store.clone()).await?;
    let dossier_api = Arc::new(DossierApi {
        store: store.clone(),
        tokens: cx.tokens.clone(),
        catalog: cx.catalog.clone(),
        use_log: licences.use_log().clone(),
        subscriptions: Some(subscriptions.clone()),
        objections: Some(objections),
    });
    // Down-tables read by the same rule as the shared view: this process holds the subscriptions.
    crate::down_table::start(cx, down_tables, Some(subscriptions))
        .map_err(|e| failed("a front-end database down-table")(e))?;
    cx.serve(api::router(dossier_api), api::ROUTES);
    crate::sink::start(cx, Arc::new(DossierSink::new(store, cx.registry.clone(), cx.time_zone.clone())));
    Ok(())
}
