//! Governance joining a node: the subscription view, brought up to the topic before the node
//! serves and kept following it, the routes, and the metrics.

use std::{sync::Arc, time::Duration};

use chrono::NaiveDate;
use govex_http::{failed, Context, StartError};
use prometheus_client::{
    encoding::EncodeLabelSet,
    metrics::{
        family::Family,
        gauge::Gauge,
        histogram::{exponential_buckets, Histogram},
    },
};

use super::{
    api::{self, GovernanceApi},
    dead_letters::{self, DeadLetterApi, Replays},
    view::{self, Governed, View},
    GovernanceConfig, Objections, Outcome, State, Subscriptions,
};
use crate::use_log::UseLog;

/// How often a view reads what other processes published.
const FOLLOW_EVERY: Duration = Duration::from_secs(2);

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StateLabel {
    state: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OnTimeLabel {
    on_time: String,
}

/// `govex_subscriptions{state}`, `govex_subscription_requests_overdue`,
/// `govex_objections{state}` and `govex_objection_resolution_seconds`.
#[derive(Clone)]
pub struct GovernanceMetrics {
    subscriptions: Family<StateLabel, Gauge>,
    overdue: Gauge,
    answered: Family<OnTimeLabel, Gauge>,
    objections: Family<StateLabel, Gauge>,
    resolution: Histogram,
}

impl Default for GovernanceMetrics {
    fn default() -> Self {
        Self {
            subscriptions: Family::default(),
            overdue: Gauge::default(),
            answered: Family::default(),
            objections: Family::default(),
            // An hour to about three weeks: objections are resolved in working days.
            resolution: Histogram::new(exponential_buckets(3_600.0, 2.0, 10)),
        }
    }
}

impl GovernanceMetrics {
    fn register(metrics: &govex_bus::Metrics) -> Self {
        let it = Self::default();
        metrics.register(|r| {
            r.register("subscriptions", "Subscriptions by state", it.subscriptions.clone());
            r.register(
                "subscription_requests_overdue",
                "Requests still pending after their due day (working days)",
                it.overdue.clone(),
            );
            r.register(
                "subscription_requests_answered",
                "Requests answered, by whether by their due day (on-time rate: on_time=\"true\" over all)",
                it.answered.clone(),
            );
            r.register("objections", "Objections to shared records by outcome", it.objections.clone());
            r.register_with_unit(
                "objection_resolution",
                "Time from an objection to its resolution",
                prometheus_client::registry::Unit::Seconds,
                it.resolution.clone(),
            );
        });
        it
    }

    /// Counts a resolution that took `millis`.
    pub fn resolved(&self, millis: u64) {
        self.resolution.observe(millis as f64 / 1_000.0);
    }

    /// Sets the gauges from the views as of `today`.
    pub fn observe(&self, view: &Subscriptions, objections: &Objections, today: NaiveDate) {
        let all = objections.list(|_| true);
        for outcome in [Outcome::Open, Outcome::Corrected, Outcome::Rejected] {
            let count = all.iter().filter(|o| o.outcome == outcome).count();
            self.objections.get_or_create(&StateLabel { state: outcome.as_str().into() }).set(count as i64);
        }
        let all = view.list(|_| true);
        // An approved subscription whose period ended grants nothing: counted `expired`, not
        // `approved`, so the gauge says what is in force.
        let ended = |s: &super::Subscription| s.state == State::Approved && s.granted_until.is_some_and(|u| u < today);
        for state in [State::Pending, State::Approved, State::Rejected, State::Revoked] {
            let count = all.iter().filter(|s| s.state == state && !ended(s)).count();
            self.subscriptions.get_or_create(&StateLabel { state: state.as_str().into() }).set(count as i64);
        }
        let expired = all.iter().filter(|s| ended(s)).count();
        self.subscriptions.get_or_create(&StateLabel { state: "expired".into() }).set(expired as i64);
        self.overdue.set(all.iter().filter(|s| s.is_overdue(today)).count() as i64);
        for on_time in [true, false] {
            let count = all.iter().filter(|s| s.answered_on_time() == Some(on_time)).count();
            self.answered.get_or_create(&OnTimeLabel { on_time: on_time.to_string() }).set(count as i64);
        }
    }
}

/// Makes `T`'s topic if it is missing, writes the view back to a topic that lost its
/// records, and applies the topic to the view: before the node serves, the view holds what
/// the topic holds.
async fn follow_from_start<T: Governed>(cx: &Context, view: &View<T>) -> Result<(), StartError> {
    let topic = T::TOPIC;
    cx.bus.ensure_log_topic(topic).await.map_err(failed(format!("topic {topic} cannot be made")))?;
    let restored = view::restore_topic(&cx.bus, view, cx.division).await;
    restored.map_err(|e| failed(format!("topic {topic} cannot be restored"))(e))?;
    view::catch_up(&cx.bus, view).await.map_err(|e| failed(format!("topic {topic} cannot be read"))(e))?;
    Ok(())
}

/// Opens the view under `data_dir/governance`, applies the topic to it, follows the topic,
/// and serves the subscription routes. Returns the view, which every read of a catalogued
/// resource consults.
pub async fn build(
    cx: &mut Context,
    config: &GovernanceConfig,
    use_log: UseLog,
    records: crate::dossier::DossierStore,
) -> Result<(Subscriptions, Objections), StartError> {
    if let (Some(view), Some(objections)) = (cx.shared::<Subscriptions>(), cx.shared::<Objections>()) {
        return Ok((view, objections));
    }
    let calendar = config.calendar().map_err(|e| failed("the working-day calendar cannot be read")(e))?;
    let dir = cx.data_dir.join("governance");
    let db = govex_schemas::store::open_sled(&dir)
        .map_err(failed(format!("governance views {} cannot be opened", dir.display())))?;
    cx.stores.add("governance", &db);
    let view = Subscriptions::open(&db).map_err(failed("the subscription view cannot be read"))?;
    follow_from_start(cx, &view).await?;
    let objections = Objections::open(&db).map_err(failed("the objection view cannot be read"))?;
    follow_from_start(cx, &objections).await?;
    let replays = Replays::open(&db).map_err(failed("the dead-letter replay view cannot be read"))?;
    follow_from_start(cx, &replays).await?;
    let api_use_log = use_log.clone();
    let metrics = GovernanceMetrics::register(&cx.metrics);
    metrics.observe(&view, &objections, super::today());
    // When the calendar runs out (the start of the year after its last): due days past it
    // cannot be counted, and the chart's alert warns while there is time to add the next
    // year from the State Council's notice.
    if let Some(last) = calendar.years().max() {
        let end = NaiveDate::from_ymd_opt(last + 1, 1, 1)
            .and_then(|d| d.and_hms_opt(0, 0, 0))
            .map(|t| t.and_utc().timestamp() - i64::from(cx.time_zone.offset().local_minus_utc()));
        if let Some(end) = end {
            let gauge: Gauge = Gauge::default();
            gauge.set(end);
            cx.metrics.register(|r| {
                r.register(
                    "working_calendar_end_timestamp_seconds",
                    "When the working-day calendar's last known year ends (the start of the next), in seconds since the epoch",
                    gauge,
                )
            });
        }
    }
    let api = Arc::new(GovernanceApi {
        view: view.clone(),
        objections: objections.clone(),
        records,
        bus: cx.bus.clone(),
        tokens: cx.tokens.clone(),
        catalog: cx.catalog.clone(),
        use_log: use_log.clone(),
        calendar,
        answer_within: config.answer_within_working_days,
        division: cx.division,
        writing: tokio::sync::Mutex::new(()),
        metrics: metrics.clone(),
    });
    cx.serve(api::router(api), api::ROUTES);
    let dead_letters = Arc::new(DeadLetterApi {
        bus: cx.bus.clone(),
        registry: cx.registry.clone(),
        catalog: cx.catalog.clone(),
        tokens: cx.tokens.clone(),
        use_log: api_use_log,
        replays: replays.clone(),
        zone: cx.time_zone.clone(),
        division: cx.division,
        replaying: tokio::sync::Mutex::new(()),
    });
    cx.serve(dead_letters::router(dead_letters), dead_letters::ROUTES);
    let (bus, following, objected, stop) = (cx.bus.clone(), view.clone(), objections.clone(), cx.stop.clone());
    cx.tasks.spawn(async move {
        loop {
            tokio::select! {
                () = stop.cancelled() => return,
                () = tokio::time::sleep(FOLLOW_EVERY) => {}
            }
            if let Err(error) = view::catch_up(&bus, &following).await {
                tracing::warn!(%error, "the subscription topic could not be read; trying again");
            }
            if let Err(error) = view::catch_up(&bus, &objected).await {
                tracing::warn!(%error, "the objection topic could not be read; trying again");
            }
            if let Err(error) = view::catch_up(&bus, &replays).await {
                tracing::warn!(%error, "the dead-letter replay topic could not be read; trying again");
            }
            // Overdue is a matter of the day as much as of the records.
            metrics.observe(&following, &objected, super::today());
        }
    });
    cx.share(view.clone());
    cx.share(objections.clone());
    Ok((view, objections))
}
