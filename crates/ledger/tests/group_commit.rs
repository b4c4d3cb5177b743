//! Group commit under concurrency: batching, isolation of failing jobs, the
//! caller's own rows in the same commit, shutdown.

mod common;

use std::collections::HashMap;
use std::sync::{Arc, Mutex, mpsc};
use std::time::Duration;

use common::*;
use ledger::{
    BatchReport, GroupCommit, GroupCommitConfig, LedgerRead, LedgerStore, LedgerTx, Migrations,
    Outcome, SqliteStore, SubmitError, TransferError, TransferId, TransferRejection,
    TransferRequest,
};

const HOST: Migrations = Migrations {
    component: "host",
    steps: &["CREATE TABLE journal (ref INTEGER PRIMARY KEY, outcome TEXT NOT NULL) STRICT"],
};

type Batches = Arc<Mutex<Vec<BatchReport>>>;

/// A committer over the fixture's file (with the host's table) that records
/// every batch.
fn start(fx: Fixture, max_batch: usize) -> (GroupCommit<SqliteStore>, Batches, Fixture) {
    let store = SqliteStore::open_with(fx.path(), &[HOST]).unwrap();
    let batches = Batches::default();
    let seen = batches.clone();
    let config = GroupCommitConfig {
        queue_capacity: 1_024,
        max_batch,
        on_batch: Some(Arc::new(move |b: &BatchReport| {
            seen.lock().unwrap().push(*b)
        })),
    };
    (GroupCommit::start(store, config), batches, fx)
}

/// Occupies the committer with a job that waits for the returned sender, so
/// that everything submitted meanwhile queues up behind it. Returns once the
/// committer is running that job.
async fn hold(
    ledger: &GroupCommit<SqliteStore>,
) -> (mpsc::Sender<()>, tokio::task::JoinHandle<()>) {
    let (release, wait) = mpsc::channel::<()>();
    let (running, started) = tokio::sync::oneshot::channel::<()>();
    let l = ledger.clone();
    let held = tokio::spawn(async move {
        let job = move |_: &mut ledger::SqliteTx<'_>| {
            running.send(()).map_err(drop)?;
            wait.recv().map_err(drop)
        };
        l.submit(job).await.unwrap();
    });
    started.await.unwrap();
    (release, held)
}

async fn until_queued(ledger: &GroupCommit<SqliteStore>, depth: usize) {
    // Bounded wait: the submitters are already spawned and only need to run.
    for _ in 0..10_000 {
        if ledger.queue_depth() >= depth {
            return;
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    panic!("queue never reached {depth}");
}

fn sale(n: u128) -> TransferRequest {
    TransferRequest::single(TransferId(n), FUNDING, SHOP, 10, EUR)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batches_take_what_is_queued_up_to_the_bound() {
    let (ledger, batches, _fx) = start(Fixture::new(), 8);
    let (release, held) = hold(&ledger).await;
    let tasks: Vec<_> = (1..=20u128)
        .map(|n| {
            let l = ledger.clone();
            tokio::spawn(async move { l.submit(move |tx| tx.create_transfer(&sale(n))).await })
        })
        .collect();
    until_queued(&ledger, 20).await;
    release.send(()).unwrap();
    held.await.unwrap();
    for t in tasks {
        assert!(t.await.unwrap().unwrap().is_created());
    }
    let sizes: Vec<usize> = batches.lock().unwrap().iter().map(|b| b.size).collect();
    assert_eq!(sizes, [1, 8, 8, 4]);
    let m = ledger.metrics();
    assert_eq!(
        (m.jobs_committed, m.batches_committed, m.max_batch_size),
        (21, 4, 8)
    );
    assert_eq!(m.queue_depth, 0);
    let mut store = ledger.shutdown().await.unwrap();
    assert_consistent(&mut store.transaction().unwrap());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_job_does_not_affect_its_batch() {
    let (ledger, batches, _fx) = start(Fixture::new(), 64);
    let (release, held) = hold(&ledger).await;

    // Each job writes a transfer and a journal row; three of them fail after
    // writing, each differently.
    let write = |tx: &mut ledger::SqliteTx<'_>, n: u128| -> Result<u64, String> {
        tx.create_transfer(&sale(n)).map_err(|e| e.to_string())?;
        tx.sql()
            .execute(
                "INSERT INTO journal (ref, outcome) VALUES (?1, 'approved')",
                [n as i64],
            )
            .map_err(|e| e.to_string())
            .map(|rows| rows as u64)
    };
    type Job = Box<dyn FnOnce(&mut ledger::SqliteTx<'_>) -> Result<u64, String> + Send>;
    let jobs: Vec<Job> = vec![
        Box::new(move |tx| write(tx, 1)),
        Box::new(move |tx| write(tx, 2).and(Err("refused after writing".into()))),
        Box::new(move |tx| {
            write(tx, 3)?;
            panic!("job 3 fails hard")
        }),
        Box::new(move |tx| {
            write(tx, 4)?;
            // Over the funds of the card: rejected, and the job gives up.
            let over = TransferRequest::single(TransferId(40), CARD, SHOP, LOADED + 1, EUR);
            tx.create_transfer(&over)
                .map(|_| 0)
                .map_err(|e| e.to_string())
        }),
        Box::new(move |tx| write(tx, 5)),
        // Same id as job 1 with other fields: job 1's row is untouched.
        Box::new(move |tx| {
            let clash = TransferRequest::single(TransferId(1), FUNDING, SHOP, 11, EUR);
            tx.create_transfer(&clash)
                .map(|_| 0)
                .map_err(|e| e.to_string())
        }),
    ];
    // Queued one by one, in this order, behind the held job: one batch.
    let mut queued = Vec::new();
    for (i, job) in jobs.into_iter().enumerate() {
        let l = ledger.clone();
        queued.push(tokio::spawn(async move { l.submit(job).await }));
        until_queued(&ledger, i + 1).await;
    }
    release.send(()).unwrap();
    held.await.unwrap();
    let mut answers = Vec::new();
    for j in queued {
        answers.push(j.await.unwrap());
    }
    assert!(matches!(answers[0], Ok(1)));
    assert!(matches!(&answers[1], Err(SubmitError::Job(e)) if e == "refused after writing"));
    assert!(matches!(answers[2], Err(SubmitError::Panicked)));
    assert!(matches!(&answers[3], Err(SubmitError::Job(e)) if e.contains("insufficient funds")));
    assert!(matches!(answers[4], Ok(1)));
    assert!(matches!(&answers[5], Err(SubmitError::Job(e)) if e.contains("different fields")));
    let batch = batches.lock().unwrap()[1];
    assert_eq!(
        (batch.size, batch.failed_jobs, batch.committed),
        (6, 4, true)
    );

    let mut store = ledger.shutdown().await.unwrap();
    let mut tx = store.transaction().unwrap();
    for (n, kept) in [(1, true), (2, false), (3, false), (4, false), (5, true)] {
        assert_eq!(
            tx.get_transfer(TransferId(n)).unwrap().is_some(),
            kept,
            "transfer {n}"
        );
        let rows: i64 = tx
            .sql()
            .query_row(
                "SELECT count(*) FROM journal WHERE ref = ?1",
                [n as i64],
                |r| r.get(0),
            )
            .unwrap();
        assert_eq!(rows == 1, kept, "journal row {n}");
    }
    assert_eq!(tx.get_transfer(TransferId(1)).unwrap().unwrap().amount, 10);
    assert_eq!(tx.balances(SHOP).unwrap().unwrap().credits_posted, 20);
    assert_consistent(&mut tx);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_acknowledged_transfer_is_stored_exactly_once() {
    let (ledger, batches, fx) = start(Fixture::new(), 32);
    // 64 tasks; every id is submitted by two different tasks at once, so the
    // ledger sees each request and its concurrent duplicate.
    const TASKS: u128 = 64;
    const PER_TASK: u128 = 25;
    // Meanwhile a reader audits the ledger over and over: every snapshot it
    // sees between commits is consistent.
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let auditor = {
        let (path, stop) = (fx.path(), stop.clone());
        std::thread::spawn(move || {
            let mut reader = ledger::SqliteReader::open(path).unwrap();
            let mut audits = 0;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) && audits < 10_000 {
                assert_consistent(&mut reader);
                audits += 1;
            }
            audits
        })
    };
    let tasks: Vec<_> = (0..TASKS)
        .map(|task| {
            let l = ledger.clone();
            tokio::spawn(async move {
                let mut answers = Vec::new();
                for k in 0..PER_TASK {
                    let n = 1 + (task / 2) * PER_TASK + k;
                    let card = if n.is_multiple_of(2) { CARD } else { CARD2 };
                    let req = TransferRequest::single(TransferId(n), card, SHOP, 7, EUR);
                    let answer = l.submit(move |tx| tx.create_transfer(&req)).await;
                    answers.push((n, answer));
                }
                answers
            })
        })
        .collect();
    let mut created: HashMap<u128, usize> = HashMap::new();
    let mut existed: HashMap<u128, usize> = HashMap::new();
    for t in tasks {
        for (n, answer) in t.await.unwrap() {
            match answer {
                Ok(Outcome::Created(t)) => {
                    assert_eq!(t.amount, 7);
                    *created.entry(n).or_default() += 1;
                }
                Ok(Outcome::Exists(_)) => *existed.entry(n).or_default() += 1,
                Err(e) => panic!("transfer {n}: {e}"),
            }
        }
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    assert!(auditor.join().unwrap() > 0);
    let ids = TASKS / 2 * PER_TASK;
    assert_eq!(created.len() as u128, ids);
    assert!(created.values().all(|&c| c == 1), "each id created once");
    assert_eq!(existed.len() as u128, ids);
    assert!(
        existed.values().all(|&c| c == 1),
        "its duplicate saw the first result"
    );
    assert!(
        batches
            .lock()
            .unwrap()
            .iter()
            .all(|b| b.size <= 32 && b.committed)
    );

    ledger.shutdown().await.unwrap();
    let mut reader = ledger::SqliteReader::open(fx.path()).unwrap();
    for n in 1..=ids {
        let t = reader
            .get_transfer(TransferId(n))
            .unwrap()
            .expect("acknowledged is stored");
        assert_eq!(t.amount, 7);
    }
    let shop = reader.balances(SHOP).unwrap().unwrap();
    assert_eq!(u128::from(shop.credits_posted), 7 * ids);
    let report = assert_consistent(&mut reader);
    assert_eq!(u128::from(report.transfers), ids + 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_drains_the_queue_then_refuses() {
    let (ledger, _batches, _fx) = start(Fixture::new(), 4);
    let (release, held) = hold(&ledger).await;
    let tasks: Vec<_> = (1..=10u128)
        .map(|n| {
            let l = ledger.clone();
            tokio::spawn(async move { l.submit(move |tx| tx.create_transfer(&sale(n))).await })
        })
        .collect();
    until_queued(&ledger, 10).await;
    let l = ledger.clone();
    let stopping = tokio::spawn(async move { l.shutdown().await });
    until_queued(&ledger, 11).await;
    release.send(()).unwrap();
    held.await.unwrap();
    for t in tasks {
        assert!(
            t.await.unwrap().unwrap().is_created(),
            "queued before shutdown: committed"
        );
    }
    let mut store = stopping.await.unwrap().expect("store handed back");
    let late = ledger.submit(move |tx| tx.create_transfer(&sale(99))).await;
    assert!(matches!(late, Err(SubmitError::Closed)));
    assert!(ledger.shutdown().await.is_none());
    let mut tx = store.transaction().unwrap();
    assert_eq!(tx.get_transfer(TransferId(99)).unwrap(), None);
    assert_eq!(tx.balances(SHOP).unwrap().unwrap().credits_posted, 100);
    assert_consistent(&mut tx);
}

#[test]
fn blocking_submitters_share_batches_too() {
    let fx = Fixture::new();
    let store = SqliteStore::open(fx.path()).unwrap();
    let ledger = GroupCommit::start(store, GroupCommitConfig::default());
    let threads: Vec<_> = (0..8u128)
        .map(|k| {
            let l = ledger.clone();
            std::thread::spawn(move || {
                for i in 0..10 {
                    let req = sale(k * 100 + i + 1);
                    let t = l
                        .submit_blocking(move |tx| tx.create_transfer(&req))
                        .unwrap();
                    assert!(t.is_created());
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    // Rejections come back as the job's own error.
    let over = TransferRequest::single(TransferId(5_000), CARD, SHOP, LOADED + 1, EUR);
    let err = ledger
        .submit_blocking(move |tx| tx.create_transfer(&over))
        .unwrap_err();
    assert!(matches!(
        err,
        SubmitError::Job(TransferError::Rejected {
            rejection: TransferRejection::ExceedsCredits,
            ..
        })
    ));
    assert_eq!(ledger.metrics().jobs_committed, 80);
    drop(ledger);
    let mut reader = ledger::SqliteReader::open(fx.path()).unwrap();
    assert_eq!(reader.balances(SHOP).unwrap().unwrap().credits_posted, 800);
    assert_consistent(&mut reader);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_ignoring_a_failed_write_is_rolled_back() {
    let mut fx = Fixture::new();
    {
        let tx = fx.store.transaction().unwrap();
        inject_failure(&tx, 13);
        tx.commit().unwrap();
    }
    let (ledger, _batches, fx) = start(fx, 64);
    let (release, held) = hold(&ledger).await;
    let l = ledger.clone();
    let careless = tokio::spawn(async move {
        l.submit(|tx| {
            tx.create_transfer(&sale(1)).map_err(|e| e.to_string())?;
            let failed =
                tx.create_transfer(&TransferRequest::single(TransferId(2), CARD, SHOP, 13, EUR));
            assert!(failed.is_err());
            Ok::<_, String>("ignored the failure")
        })
        .await
    });
    until_queued(&ledger, 1).await;
    let l = ledger.clone();
    let fine = tokio::spawn(async move { l.submit(move |tx| tx.create_transfer(&sale(3))).await });
    until_queued(&ledger, 2).await;
    release.send(()).unwrap();
    held.await.unwrap();
    assert!(matches!(
        careless.await.unwrap(),
        Err(SubmitError::Aborted(e)) if matches!(*e, ledger::StoreError::Poisoned)
    ));
    assert!(fine.await.unwrap().unwrap().is_created());
    ledger.shutdown().await.unwrap();
    let mut reader = ledger::SqliteReader::open(fx.path()).unwrap();
    assert_eq!(reader.get_transfer(TransferId(1)).unwrap(), None);
    assert_eq!(reader.get_transfer(TransferId(2)).unwrap(), None);
    assert!(reader.get_transfer(TransferId(3)).unwrap().is_some());
    assert_eq!(reader.balances(CARD).unwrap().unwrap().debits_posted, 0);
    assert_consistent(&mut reader);
}
