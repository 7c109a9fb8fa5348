//! Crash test: 200,000 events, and the processor is killed with SIGKILL at
//! random points five times while it works through them. Afterwards the
//! events table holds every event exactly once:
//! count() == uniqExact(event_id) == events produced, and each device's
//! state was restored after every kill. Run through `./dev test`.

use std::time::Duration;

use pulse_testkit::{
    clickhouse, device_sequences, event_counts, free_port, poll_until, produce_events,
    start_processor, start_registry, unique, Stack,
};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

const EVENTS: u64 = 200_000;
const KILLS: usize = 5;

#[tokio::test(flavor = "multi_thread")]
#[ignore = "needs the local stack: run through ./dev test"]
async fn processor_killed_five_times_stores_every_event_exactly_once() {
    let stack = Stack::from_env();
    let prefix = unique("crash") + ".";
    let database = unique("crash_");
    let registry = start_registry(&stack, &prefix).await;
    produce_events(&stack, &prefix, &registry.url, EVENTS, 7);

    let client = clickhouse(&stack.clickhouse_url, &database);
    let port = free_port();
    let settings = [
        ("PULSE_MAX_BATCH", "1000".to_string()),
        ("PULSE_PROCESSOR_INSTANCE_ID", "crash-test".to_string()),
    ];
    let start = || start_processor(&stack, &prefix, &registry.url, &database, port, &settings);
    let mut rng = StdRng::seed_from_u64(20261122);
    let mut stored_at_kill = Vec::new();
    let mut stored = 0;
    for _ in 0..KILLS {
        let mut processor = start().await;
        // Kill it at a random point once it is making progress again.
        stored = poll_until(
            "progress after a restart",
            Duration::from_secs(60),
            || async {
                event_counts(&client)
                    .await
                    .map(|(c, _)| c)
                    .filter(|c| *c > stored)
            },
        )
        .await;
        tokio::time::sleep(Duration::from_millis(rng.random_range(100..1500))).await;
        processor.kill();
        stored = event_counts(&client).await.map_or(stored, |(c, _)| c);
        stored_at_kill.push(stored);
    }
    let _processor = start().await;
    let (count, unique_ids) =
        poll_until("every event stored", Duration::from_secs(240), || async {
            event_counts(&client).await.filter(|(c, _)| *c >= EVENTS)
        })
        .await;
    // A late duplicate would show up after the count first reached EVENTS.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let (count_after, unique_after) = event_counts(&client).await.expect("counts");
    eprintln!("rows stored at each kill: {stored_at_kill:?}; finally {count_after} rows, {unique_after} unique");
    assert!(
        stored_at_kill.iter().all(|c| *c > 0 && *c < EVENTS),
        "a kill landed outside the run: {stored_at_kill:?}"
    );
    assert_eq!((count, unique_ids), (EVENTS, EVENTS));
    assert_eq!((count_after, unique_after), (EVENTS, EVENTS));
    // The per-device-minute rollup, fed by a materialized view, agrees.
    let rolled_up: u64 = client
        .query("SELECT countMerge(events) FROM device_minute")
        .fetch_one()
        .await
        .expect("rollup readable");
    assert_eq!(rolled_up, EVENTS);
    // Device state came back from the changelog after every kill.
    assert_eq!(device_sequences(&client).await, Some((1000, 0)));
}
