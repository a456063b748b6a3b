//! Every decision the cluster makes shows in Prometheus output, each series with its HELP
//! text (promtool rejects series without one), and labels from bounded sets only.

mod support;

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use metrics_exporter_prometheus::PrometheusBuilder;
use support::{Instance, METHOD, UNAVAILABLE, payload};
use tideway_cluster::{
    Balancer, CallPolicy, Cluster, ClusterConfig, EndpointSpec, OutlierConfig, RetryConfig, metrics,
};
use tideway_rpc::{CallOptions, ClientConfig, Codec};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn decisions_are_counted_with_help_and_bounded_labels() {
    let recorder = PrometheusBuilder::new().build_recorder();
    let handle = recorder.handle();
    metrics::describe();
    ::metrics::set_global_recorder(recorder).expect("the only recorder in this test binary");

    let good = Instance::any_port("good").await;
    let bad = Instance::any_port("bad").await;
    bad.behaviour.fail.store(UNAVAILABLE, Ordering::SeqCst);
    let cluster = Arc::new(
        Cluster::new(
            "test.Work",
            ClusterConfig {
                // Round robin: the failing instance gets its turns.
                balancer: Balancer::RoundRobin,
                fail_fast_after: Duration::from_millis(50),
                outlier: OutlierConfig {
                    consecutive_failures: 2,
                    ..Default::default()
                },
                retry: RetryConfig {
                    max_attempts: 2,
                    ..Default::default()
                },
                ..Default::default()
            },
            ClientConfig::default(),
        )
        .unwrap(),
    );
    cluster.update_endpoints(&[
        EndpointSpec::new("good", good.addr),
        EndpointSpec::new("bad", bad.addr),
    ]);
    let options = CallOptions::with_timeout(Duration::from_secs(1));
    for _ in 0..20 {
        cluster
            .call(
                METHOD,
                Codec::Json,
                payload(),
                &options,
                &CallPolicy::default(),
            )
            .await
            .unwrap();
    }
    // Removing both: a drain, then calls shed for want of an endpoint.
    cluster.update_endpoints(&[]);
    let err = cluster
        .call(
            METHOD,
            Codec::Json,
            payload(),
            &options,
            &CallPolicy::default(),
        )
        .await
        .unwrap_err();
    assert!(err.every_attempt_failed());
    cluster.record_gauges();

    let text = handle.render();
    let stats = cluster.stats();
    println!("{text}\n{stats:?}");
    assert!(stats.retries > 0 && stats.ejections > 0 && stats.shed > 0);
    for name in [
        metrics::LB_PICKS_TOTAL,
        metrics::OUTLIER_EJECTIONS_TOTAL,
        metrics::RETRIES_TOTAL,
        metrics::ENDPOINT_DRAINS_TOTAL,
        metrics::CLUSTER_SHED_TOTAL,
        metrics::CLUSTER_ENDPOINTS,
        metrics::CLUSTER_WAITING_CALLS,
    ] {
        assert!(
            text.contains(&format!("# HELP {name} ")),
            "no HELP for {name}"
        );
    }
    // Every series in the output has HELP.
    for line in text.lines().filter(|l| l.starts_with("tideway_")) {
        let name = line.split(['{', ' ']).next().unwrap();
        assert!(
            text.contains(&format!("# HELP {name} ")),
            "no HELP for {name}"
        );
    }
    let picks = format!(r#"{}{{service="test.Work"}} "#, metrics::LB_PICKS_TOTAL);
    let picked: u64 = text
        .lines()
        .find_map(|l| l.strip_prefix(&picks))
        .expect("picks counted")
        .parse()
        .unwrap();
    assert_eq!(picked, stats.attempts);
    assert!(text.contains(r#"tideway_retries_total{service="test.Work",reason="unavailable"}"#));
    assert!(text.contains(
        r#"tideway_outlier_ejections_total{service="test.Work",reason="consecutive_failures"} 1"#
    ));
    assert!(
        text.contains(r#"tideway_cluster_shed_total{service="test.Work",reason="no_endpoint"} 1"#)
    );
    assert!(
        text.contains(r#"tideway_endpoint_drains_total{service="test.Work",reason="removed"} 2"#)
    );
    // No instance address or id in any label.
    for i in [&good, &bad] {
        assert!(!text.contains(&i.addr.to_string()));
    }
    assert!(!text.contains(r#""good""#) && !text.contains(r#""bad""#));
}
