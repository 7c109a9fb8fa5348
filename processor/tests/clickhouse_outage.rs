//! ClickHouse unavailable for 30 s in the middle of a run, stopped or hung:
//! the processor retries with backoff, holds its memory, and once ClickHouse
//! is back every event is stored exactly once. Each test uses a ClickHouse
//! server of its own. Run through `./dev test`.

use std::time::{Duration, Instant};

use pulse_testkit::{
    clickhouse, event_counts, free_port, peak_rss_kib, poll_until, produce_events, start_processor,
    start_registry, unique, ScriptedServer, Stack,
};

const EVENTS: u64 = 60_000;
const OUTAGE: Duration = Duration::from_secs(30);

/// The two tests load the machine heavily; one at a time.
static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

#[derive(Clone, Copy, Debug)]
enum Fault {
    /// Shut down cleanly: connections are refused.
    Stopped,
    /// Frozen (SIGSTOP): connections are accepted and never answered, so an
    /// insert hangs for the whole outage unless the processor gives up on it.
    Hung,
}

#[tokio::test(flavor = "multi_thread")]
#[ignore = "needs the local stack: run through ./dev test"]
async fn clickhouse_outage_pauses_processing_and_loses_nothing() {
    outage(Fault::Stopped).await;
}

#[tokio::test(flavor = "multi_thread")]
#[ignore = "needs the local stack: run through ./dev test"]
async fn clickhouse_hanging_mid_insert_loses_nothing() {
    outage(Fault::Hung).await;
}

async fn outage(fault: Fault) {
    let _turn = ONE_AT_A_TIME.lock().await;
    let stack = Stack::from_env();
    let server = ScriptedServer::clickhouse();
    tokio::task::block_in_place(|| server.start());
    let clickhouse_url = format!("http://127.0.0.1:{}", server.port());
    let prefix = unique("chout") + ".";
    let database = unique("chout_");
    let registry = start_registry(&stack, &prefix).await;
    produce_events(&stack, &prefix, &registry.url, EVENTS, 11);

    let client = clickhouse(&clickhouse_url, &database);
    let mut processor = start_processor(
        &stack,
        &prefix,
        &registry.url,
        &database,
        free_port(),
        &[
            ("PULSE_CLICKHOUSE_URL", clickhouse_url),
            // Small batches keep the run going when the outage begins.
            ("PULSE_MAX_BATCH", "200".into()),
        ],
    )
    .await;

    let before = poll_until("first rows stored", Duration::from_secs(60), || async {
        event_counts(&client)
            .await
            .map(|(c, _)| c)
            .filter(|c| *c > 0)
    })
    .await;
    tokio::task::block_in_place(|| match fault {
        Fault::Stopped => server.stop(),
        Fault::Hung => server.freeze(),
    });
    // The outage lasts OUTAGE whatever the processor does: a timed stop.
    tokio::time::sleep(OUTAGE).await;
    tokio::task::block_in_place(|| match fault {
        Fault::Stopped => server.start(),
        Fault::Hung => server.thaw(),
    });
    let deadline = Instant::now() + Duration::from_secs(180);
    let (count, unique_ids) = loop {
        let counts = event_counts(&client).await;
        if let Some(c) = counts.filter(|(c, _)| *c >= EVENTS) {
            break c;
        }
        if let Some(status) = processor.exited() {
            panic!("the processor exited ({status}) with {counts:?} rows stored");
        }
        assert!(
            Instant::now() < deadline,
            "events not all stored within 180 s of the restart: {counts:?} of {EVENTS}"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    };
    let peak_rss = peak_rss_kib(processor.pid()).unwrap_or(u64::MAX);
    eprintln!(
        "ClickHouse {fault:?} for {OUTAGE:?} with {before} rows stored; afterwards {count} rows, \
         {unique_ids} unique; processor peak RSS {} MiB",
        peak_rss / 1024
    );
    assert!(before < EVENTS, "the outage began after the run ended");
    assert_eq!((count, unique_ids), (EVENTS, EVENTS));
    assert!(
        peak_rss > 0 && peak_rss < 512 * 1024,
        "peak RSS {peak_rss} KiB"
    );
}
