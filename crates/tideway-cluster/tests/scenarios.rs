//! The traffic-management scenarios end to end: real RPC instances on 127.0.0.1, a cluster in
//! front of them, steady open-loop load. The scenarios run one at a time (they measure under
//! load on a small machine); each prints what it measured.

mod support;

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use support::{Instance, METHOD, OVERLOADED, Record, UNAVAILABLE, payload};
use tideway_cluster::{
    Balancer, BreakerConfig, CallPolicy, Cluster, ClusterConfig, ClusterErrorKind, EndpointSpec,
    EndpointState, HedgeConfig, OutlierConfig, RetryConfig,
};
use tideway_rpc::{CallOptions, ClientConfig, Codec, Status};
use tokio::time::Instant;

/// One scenario at a time: they measure rates and latencies on a shared 2-core machine.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

fn cluster(config: ClusterConfig, instances: &[&Instance]) -> Arc<Cluster> {
    let c = Cluster::new("test.Work", config, ClientConfig::default()).unwrap();
    c.update_endpoints(&specs(instances));
    Arc::new(c)
}

fn specs(instances: &[&Instance]) -> Vec<EndpointSpec> {
    instances
        .iter()
        .map(|i| EndpointSpec::new(i.behaviour.name.clone(), i.addr))
        .collect()
}

async fn three(delay_ms: u64) -> [Instance; 3] {
    let a = Instance::any_port("a").await;
    let b = Instance::any_port("b").await;
    let c = Instance::any_port("c").await;
    for i in [&a, &b, &c] {
        i.behaviour.delay_ms.store(delay_ms, Ordering::SeqCst);
    }
    [a, b, c]
}

fn failures(records: &[Record]) -> Vec<&Record> {
    records.iter().filter(|r| r.result.is_err()).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_instance_p2c_peak_ewma_keeps_success_above_99_9_percent() {
    let _serial = SERIAL.lock().await;
    let [a, b, slow] = three(1).await;
    slow.behaviour.delay_ms.store(2_000, Ordering::SeqCst);
    let p2c = cluster(ClusterConfig::default(), &[&a, &b, &slow]);
    let rr = cluster(
        ClusterConfig {
            balancer: Balancer::RoundRobin,
            ..Default::default()
        },
        &[&a, &b, &slow],
    );
    let deadline = Duration::from_secs(1);
    let run = Duration::from_secs(10);
    let t = Instant::now();
    // Both balancers at once, on the same instances.
    let (p2c_records, rr_records) = tokio::join!(
        support::steady_load(Arc::clone(&p2c), 600, run, deadline, false),
        support::steady_load(Arc::clone(&rr), 150, run, deadline, false),
    );
    let p2c_rate = support::success_rate(&p2c_records);
    let rr_rate = support::success_rate(&rr_records);
    println!(
        "slow instance (2 s of 3, 1 s deadline, {:?}): p2c PeakEWMA {}/{} = {:.3} %, round robin {}/{} = {:.3} %; slow instance served {} calls",
        t.elapsed(),
        p2c_records.len() - failures(&p2c_records).len(),
        p2c_records.len(),
        p2c_rate * 100.0,
        rr_records.len() - failures(&rr_records).len(),
        rr_records.len(),
        rr_rate * 100.0,
        slow.behaviour.calls(),
    );
    let failed_at: Vec<Duration> = failures(&p2c_records)
        .iter()
        .map(|r| r.started - t)
        .collect();
    println!("p2c failures started at {failed_at:?} into the run");
    println!("p2c endpoints: {:#?}", p2c.endpoints());
    assert!(p2c_records.len() >= 5_000, "{} calls", p2c_records.len());
    for f in failures(&p2c_records) {
        let err = f.result.as_ref().unwrap_err();
        assert_eq!(err.status(), Status::DeadlineExceeded, "{err}");
    }
    assert!(p2c_rate >= 0.999, "p2c success {p2c_rate}");
    assert!(
        p2c_rate > rr_rate,
        "p2c {p2c_rate} should beat round robin {rr_rate}"
    );
}

/// Runs steady load, kills instance `a` after 1 s, and returns the records with the moment the
/// cluster's client saw the connection die.
async fn kill_under_load(idempotent: bool) -> (Vec<Record>, Instant, Arc<Cluster>) {
    let [a, b, c] = three(20).await;
    let cl = cluster(ClusterConfig::default(), &[&a, &b, &c]);
    let load = tokio::spawn(support::steady_load(
        Arc::clone(&cl),
        200,
        Duration::from_secs(3),
        Duration::from_secs(2),
        idempotent,
    ));
    tokio::time::sleep(Duration::from_secs(1)).await;
    let in_flight = cl
        .endpoints()
        .iter()
        .find(|e| e.id == "a")
        .unwrap()
        .in_flight;
    a.kill().await;
    // Calls already written on the dead connection before the client can know are in flight
    // too: the kill counts from when the client has seen it.
    assert!(
        support::eventually(Duration::from_secs(2), || {
            cl.endpoints()
                .iter()
                .find(|e| e.id == "a")
                .is_some_and(|e| e.connections == 0)
        })
        .await
    );
    let seen_dead = Instant::now();
    let records = load.await.unwrap();
    println!(
        "kill (idempotent: {idempotent}): {} in flight on the instance at the kill, {} of {} calls failed; stats {:?}",
        in_flight,
        failures(&records).len(),
        records.len(),
        cl.stats()
    );
    drop((b, c));
    (records, seen_dead, cl)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_an_instance_fails_only_calls_in_flight_on_it_and_none_with_retries() {
    let _serial = SERIAL.lock().await;
    // Not idempotent: a call lost with its connection cannot be sent again, so those may fail;
    // nothing else may.
    let (records, seen_dead, cl) = kill_under_load(false).await;
    for f in failures(&records) {
        let err = f.result.as_ref().unwrap_err();
        assert!(
            f.started < seen_dead,
            "a call started after the kill failed: {err}"
        );
        assert!(err.rpc_error().is_connection_lost(), "{err}");
        assert_eq!(err.kind(), ClusterErrorKind::Exhausted);
        assert!(err.every_attempt_failed());
    }
    let after = records.iter().filter(|r| r.started >= seen_dead).count();
    assert!(after > 200, "{after} calls after the kill");
    drop(cl);

    // Idempotent: the lost calls are retried on another instance, so none fails.
    let (records, _, cl) = kill_under_load(true).await;
    let failed = failures(&records);
    assert!(
        failed.is_empty(),
        "{} failed, first: {:?}",
        failed.len(),
        failed
            .first()
            .map(|f| f.result.as_ref().unwrap_err().to_string())
    );
    assert!(cl.stats().retries > 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rolling_restart_with_graceful_shutdown_fails_nothing() {
    let _serial = SERIAL.lock().await;
    let [a, b, c] = three(5).await;
    let cl = cluster(ClusterConfig::default(), &[&a, &b, &c]);
    let load = tokio::spawn(support::steady_load(
        Arc::clone(&cl),
        300,
        Duration::from_millis(6_500),
        Duration::from_secs(2),
        // Not idempotent: only what is certainly safe may be retried.
        false,
    ));
    let mut restarted = Vec::new();
    for instance in [a, b, c] {
        tokio::time::sleep(Duration::from_millis(1_500)).await;
        let behaviour = Arc::clone(&instance.behaviour);
        let instance = instance.restart().await;
        restarted.push((instance, behaviour.calls()));
    }
    let records = load.await.unwrap();
    let failed = failures(&records);
    println!(
        "rolling restart: {} of {} calls failed; stats {:?}; endpoints {:#?}",
        failed.len(),
        records.len(),
        cl.stats(),
        cl.endpoints()
    );
    assert!(
        failed.is_empty(),
        "first failure: {:?}",
        failed
            .first()
            .map(|f| f.result.as_ref().unwrap_err().to_string())
    );
    // Drains seen on GoAway: at least one. Not necessarily all three: before the server closed
    // drained connections lingering (reading until the client closes), a reset could destroy a
    // GoAway the client had not read yet (seen once in CI). With the lingering close, 1 run in
    // 10 still counted 2 drains (cause not pinned down; no call failed in it). What the rolling
    // restart must show is the assertion above: no call failed.
    assert!(
        cl.stats().drains >= 1,
        "no instance was drained on GoAway: {:?}",
        cl.stats()
    );
    // The first two restarted instances were readmitted and took calls again.
    for (instance, calls_at_restart) in &restarted[..2] {
        assert!(
            instance.behaviour.calls() > calls_at_restart + 10,
            "{} took no calls after its restart",
            instance.behaviour.name
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn breaker_opens_after_the_failures_probes_after_the_ejection_and_closes_on_success() {
    let _serial = SERIAL.lock().await;
    let inst = Instance::any_port("only").await;
    inst.behaviour.fail.store(UNAVAILABLE, Ordering::SeqCst);
    let cl = cluster(
        ClusterConfig {
            fail_fast_after: Duration::from_millis(100),
            outlier: OutlierConfig {
                consecutive_failures: 5,
                base_ejection: Duration::from_millis(400),
                max_ejection: Duration::from_secs(5),
                // A lone instance is ejected too (no panic mode).
                panic_threshold: 0.0,
            },
            retry: RetryConfig {
                max_attempts: 1,
                ..Default::default()
            },
            ..Default::default()
        },
        &[&inst],
    );
    let call = || {
        let cl = Arc::clone(&cl);
        async move {
            cl.call(
                METHOD,
                Codec::Json,
                payload(),
                &CallOptions::with_timeout(Duration::from_secs(2)),
                &CallPolicy::default(),
            )
            .await
        }
    };
    let state = || cl.endpoints()[0].state;
    for i in 0..5 {
        assert_eq!(state(), EndpointState::Healthy, "before failure {i}");
        let err = call().await.unwrap_err();
        assert_eq!(err.status(), Status::Unavailable);
        assert_eq!(err.kind(), ClusterErrorKind::Exhausted);
        assert_eq!(err.attempts(), 1);
    }
    let EndpointState::Ejected { remaining } = state() else {
        panic!("not ejected: {:?}", state())
    };
    assert!(remaining <= Duration::from_millis(500), "{remaining:?}");
    assert_eq!(state().breaker().as_str(), "open");
    // Open: fails fast without reaching the instance.
    let t = Instant::now();
    let err = call().await.unwrap_err();
    assert_eq!(err.kind(), ClusterErrorKind::NoEndpoint, "{err}");
    assert!(
        t.elapsed() < Duration::from_millis(400),
        "{:?}",
        t.elapsed()
    );
    assert_eq!(inst.behaviour.calls(), 5);
    // After the ejection time one call probes; the instance still fails: ejected for longer.
    assert!(
        support::eventually(Duration::from_secs(2), || state()
            == EndpointState::Probation)
        .await
    );
    call().await.unwrap_err();
    assert_eq!(inst.behaviour.calls(), 6, "one probe");
    let EndpointState::Ejected { remaining } = state() else {
        panic!("not ejected again: {:?}", state())
    };
    assert!(remaining > Duration::from_millis(400), "{remaining:?}");
    // It recovers; the next probe closes the breaker.
    inst.behaviour.fail.store(support::OK, Ordering::SeqCst);
    assert!(
        support::eventually(Duration::from_secs(3), || state()
            == EndpointState::Probation)
        .await
    );
    call().await.unwrap();
    assert_eq!(state(), EndpointState::Healthy);
    assert_eq!(state().breaker().as_str(), "closed");
    for _ in 0..5 {
        call().await.unwrap();
    }
    let stats = cl.stats();
    assert_eq!(
        (stats.ejections, stats.probes_failed, stats.probes_succeeded),
        (2, 1, 1)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retries_stay_within_the_budget_when_every_instance_fails() {
    let _serial = SERIAL.lock().await;
    let [a, b, c] = three(0).await;
    for i in [&a, &b, &c] {
        i.behaviour.fail.store(OVERLOADED, Ordering::SeqCst);
    }
    // Ejection and breakers out of the way: the budget alone must bound the retries.
    let config = ClusterConfig {
        outlier: OutlierConfig {
            consecutive_failures: u32::MAX,
            ..Default::default()
        },
        breaker: BreakerConfig {
            min_requests: u32::MAX,
            ..Default::default()
        },
        retry: RetryConfig {
            max_attempts: 3,
            ..Default::default()
        },
        ..Default::default()
    };
    let retry = config.retry.clone();
    let cl = cluster(config, &[&a, &b, &c]);
    let records = support::steady_load(
        Arc::clone(&cl),
        500,
        Duration::from_secs(3),
        Duration::from_secs(1),
        false,
    )
    .await;
    let stats = cl.stats();
    let served: u64 = [&a, &b, &c].iter().map(|i| i.behaviour.calls()).sum();
    // Within one TTL: every call deposited.
    let allowed = retry.budget_ratio * stats.calls as f64
        + f64::from(retry.budget_min_per_second) * retry.budget_ttl.as_secs_f64();
    println!(
        "retry budget: {} calls, {} retries (allowed {allowed:.0}, unbudgeted would be {}), {} refused by the budget, {} attempts reached instances",
        stats.calls,
        stats.retries,
        2 * stats.calls,
        stats.budget_exhausted,
        served
    );
    assert!(records.iter().all(|r| {
        r.result
            .as_ref()
            .is_err_and(|e| e.status() == Status::Overloaded && e.every_attempt_failed())
    }));
    assert!(
        stats.retries as f64 <= allowed,
        "{} > {allowed}",
        stats.retries
    );
    // The budget was what stopped them, and it was spent, not starved.
    assert!(stats.budget_exhausted > 0);
    assert!(stats.retries as f64 >= 0.9 * allowed, "{}", stats.retries);
    assert_eq!(
        served,
        stats.calls + stats.retries,
        "every attempt reached an instance"
    );
    let attempts: u64 = records
        .iter()
        .map(|r| u64::from(r.result.as_ref().unwrap_err().attempts()))
        .sum();
    assert_eq!(attempts, stats.attempts);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hedged_idempotent_calls_route_around_a_slow_instance() {
    let _serial = SERIAL.lock().await;
    let fast = Instance::any_port("fast").await;
    let slow = Instance::any_port("slow").await;
    slow.behaviour.delay_ms.store(400, Ordering::SeqCst);
    let cl = cluster(
        ClusterConfig {
            // Round robin: every other call goes to the slow instance first.
            balancer: Balancer::RoundRobin,
            hedge: Some(HedgeConfig {
                delay: Duration::from_millis(30),
                max_hedges: 1,
            }),
            ..Default::default()
        },
        &[&fast, &slow],
    );
    let one = |idempotent: bool| {
        let cl = Arc::clone(&cl);
        async move {
            let t = Instant::now();
            let policy = CallPolicy {
                idempotent,
                ..Default::default()
            };
            let body = cl
                .call(
                    METHOD,
                    Codec::Json,
                    payload(),
                    &CallOptions::with_timeout(Duration::from_secs(2)),
                    &policy,
                )
                .await
                .unwrap();
            (
                serde_json::from_slice::<String>(&body).unwrap(),
                t.elapsed(),
            )
        }
    };
    let mut slowest = Duration::ZERO;
    for _ in 0..20 {
        let (name, took) = one(true).await;
        assert_eq!(name, "fast");
        slowest = slowest.max(took);
    }
    let hedges = cl.stats().hedges;
    println!("hedging: 20 idempotent calls, {hedges} hedges, slowest {slowest:?}");
    assert!(hedges >= 5, "{hedges}");
    assert!(slowest < Duration::from_millis(350), "{slowest:?}");
    // Not idempotent: never hedged; the slow instance answers them.
    let mut from_slow = 0;
    for _ in 0..6 {
        let (name, _) = one(false).await;
        from_slow += usize::from(name == "slow");
    }
    assert!(from_slow >= 2, "{from_slow}");
    assert_eq!(cl.stats().hedges, hedges);
}
