//! The intake joining a node: its idempotency store under `data_dir/intake`, the record types
//! it follows, and the department routes (and `GET /catalog`).

use std::{sync::Arc, time::Duration};

use axum::{routing::get, Json, Router};
use govex_http::{failed, Context, StartError};

use super::{
    config::IntakeConfig,
    http::{router, IntakeServer, ROUTES},
    idempotency::IdempotencyStore,
    Intake,
};

/// Builds the intake; the [`Intake`] is shared on `cx` (`Arc<Intake>`) for the node's own use.
pub async fn build(cx: &mut Context, config: &IntakeConfig) -> Result<(), StartError> {
    let dir = cx.data_dir.join("intake");
    let idempotency = IdempotencyStore::open(&dir, Duration::from_secs(config.idempotency_window_secs))
        .map_err(failed(format!("intake store {} cannot be opened", dir.display())))?;
    cx.stores.add("intake", idempotency.db());
    let intake = Intake::new(&cx.registry, &cx.bus, cx.division, &cx.metrics)
        .await
        .map_err(failed("the intake cannot read its record types"))?;
    let intake = Arc::new(intake);
    // Versions stewards push go live without a restart.
    let (following, every, stop) = (intake.clone(), cx.refresh, cx.stop.clone());
    cx.tasks.spawn(following.follow(every, stop));
    let server = Arc::new(IntakeServer::new(
        intake.clone(),
        cx.tokens.clone(),
        idempotency,
        config.clone(),
        cx.requests.clone(),
    ));
    let catalog = cx.catalog.clone();
    let catalog_route =
        Router::new().route("/catalog", get(move || async move { Json(catalog.current().as_ref().clone()) }));
    let routes: Vec<&str> = ["GET /catalog"].into_iter().chain(ROUTES.iter().copied()).collect();
    cx.serve(catalog_route.merge(router(server)), &routes);
    cx.share(intake);
    Ok(())
}
