//! `govex demo` runs the flagship scenario end to end as a test: three nodes, three
//! clusters, bridges, and every step through the HTTP APIs.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_flagship_scenario_runs_across_province_city_and_county() {
    let data = tempfile::tempdir().unwrap();
    govex::demo::run(data.path()).await.expect("every step of the scenario passes");
}
