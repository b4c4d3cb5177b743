//! `posnet bench` as its users run it: the built binary starts its own
//! host (and, for `e2e`, a whole demo) on loopback, drives it, and prints
//! JSON that these tests read. Short runs: these check what the
//! benchmarks report and that the host's books agree, not how fast.

// Only `posnet` of the shared helpers is used here.
#[allow(dead_code)]
mod support;

use serde_json::Value;
use support::posnet;

/// Runs `posnet bench ARGS --json` in a new directory and returns its JSON.
fn bench(args: &[&str]) -> Value {
    let tmp = tempfile::tempdir().unwrap();
    let out = posnet(tmp.path())
        .arg("bench")
        .args(args)
        .arg("--json")
        .output()
        .expect("posnet runs");
    assert!(
        out.status.success(),
        "posnet bench {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "posnet bench {args:?} printed no JSON ({e}): {}",
            String::from_utf8_lossy(&out.stdout)
        )
    })
}

fn count(v: &Value, field: &str) -> u64 {
    v[field]
        .as_u64()
        .unwrap_or_else(|| panic!("{field} in {v:#}"))
}

#[test]
fn a_mixed_run_against_its_own_host_agrees_with_the_hosts_books() {
    let v = bench(&[
        "host",
        "--terminals",
        "4",
        "--duration",
        "2s",
        "--mix",
        "sale=7,refund=1,reversal=1,balance=1",
        "--seed",
        "7",
        "--audit",
    ]);
    assert!(count(&v, "approved") > 0, "{v:#}");
    let kinds = v["kinds"].as_object().unwrap();
    for kind in ["sale", "sign_on"] {
        assert!(kinds.contains_key(kind), "{kind} missing: {v:#}");
    }
    assert_eq!(count(&v["kinds"]["sign_on"], "count"), 4, "{v:#}");
    let audit = &v["audit"];
    assert_eq!(count(audit, "problem_count"), 0, "{audit:#}");
    assert!(count(audit, "approved_sales") > 0, "{audit:#}");
    // The host was this run's own child: its memory was read.
    assert!(count(&v, "host_rss_connected") > 0, "{v:#}");
    assert!(count(&v["machine"], "cpus") > 0, "{v:#}");
}

#[test]
fn a_sustained_rate_starts_no_more_than_its_schedule() {
    // 40 requests/s over 4 terminals for 2 s: 80 due, at most one more
    // per terminal for where each schedule starts.
    let v = bench(&[
        "host",
        "--terminals",
        "4",
        "--rate",
        "40",
        "--duration",
        "2s",
        "--seed",
        "3",
    ]);
    let sales = count(&v["kinds"]["sale"], "count");
    assert!(sales > 0 && sales <= 84, "{sales} sales: {v:#}");
    assert_eq!(v["rate"].as_f64(), Some(40.0), "{v:#}");
}

#[test]
fn scaling_holds_idle_connections_and_reports_memory_per_connection() {
    let v = bench(&[
        "scale",
        "--connections",
        "3,8",
        "--active",
        "2",
        "--duration",
        "1s",
        "--seed",
        "5",
    ]);
    let steps = v["steps"].as_array().unwrap();
    assert_eq!(steps.len(), 2, "{v:#}");
    for (step, n) in steps.iter().zip([3, 8]) {
        assert_eq!(count(step, "terminals"), n, "{step:#}");
        assert_eq!(count(step, "active"), 2, "{step:#}");
        // Every terminal, idle or not, connected and signed on.
        assert_eq!(count(&step["kinds"]["sign_on"], "count"), n, "{step:#}");
        assert!(step["host_bytes_per_connection"].is_u64(), "{step:#}");
    }
}

#[test]
fn offline_approvals_are_forwarded_once_when_the_host_is_back() {
    let v = bench(&["offline", "--terminals", "2", "--advices", "5"]);
    assert_eq!(count(&v, "advices"), 10, "{v:#}");
    assert_eq!(count(&v, "host_offline_sales"), 10, "{v:#}");
    assert!(v["advices_per_second"].as_f64().unwrap() > 0.0, "{v:#}");
}

#[test]
fn payments_go_from_the_phone_through_the_demo_terminal_to_the_host() {
    let v = bench(&["e2e", "--payments", "3"]);
    assert_eq!(count(&v, "payments"), 3, "{v:#}");
    assert_eq!(count(&v["latency"]["codes"], "Success"), 3, "{v:#}");
}
