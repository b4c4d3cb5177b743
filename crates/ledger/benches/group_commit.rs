//! Durable transfers per second through group commit, on a real file with
//! `synchronous = FULL` (every commit syncs the WAL).
//!
//! `cargo bench -p ledger --bench group_commit`
//!
//! One element is one single-phase transfer, acknowledged only after the
//! commit that made it durable. With 100 concurrent submitters the committer
//! batches them; with one submitter every transfer pays its own sync. Jobs
//! of 100 transfers show the committer's own cost per transfer.

#![allow(missing_docs)] // criterion_group! generates undocumented items

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use ledger::{
    AccountId, AccountKind, Currency, GroupCommit, GroupCommitConfig, LedgerStore, LedgerTx,
    NewAccount, SqliteStore, TransferId, TransferRequest,
};

const EUR: Currency = Currency(978);
const FUNDING: AccountId = AccountId(1);
const SHOPS: u64 = 10;

fn shop(n: u64) -> AccountId {
    AccountId(0x100 + u128::from(n % SHOPS))
}

fn durable_transfers(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .build()
        .expect("runtime");
    let dir = tempfile::tempdir().expect("temp dir");
    let mut store = SqliteStore::open(dir.path().join("bench.db")).expect("open");
    {
        let mut tx = store.transaction().expect("begin");
        tx.create_account(&NewAccount::new(FUNDING, EUR, AccountKind::Funding))
            .expect("funding");
        for n in 0..SHOPS {
            tx.create_account(&NewAccount::new(shop(n), EUR, AccountKind::Merchant))
                .expect("shop");
        }
        tx.commit().expect("commit");
    }
    let ledger = GroupCommit::start(store, GroupCommitConfig::default());
    let next_id = Arc::new(AtomicU64::new(1));

    let mut group = c.benchmark_group("group_commit");
    group.throughput(Throughput::Elements(1));
    group.sample_size(20);
    group.measurement_time(Duration::from_secs(10));
    for submitters in [1u64, 100] {
        let before = ledger.metrics();
        group.bench_function(format!("durable_transfers_{submitters}_submitters"), |b| {
            b.iter_custom(|iters| {
                rt.block_on(async {
                    let start = Instant::now();
                    let tasks: Vec<_> = (0..submitters)
                        .map(|s| {
                            let (ledger, next_id) = (ledger.clone(), next_id.clone());
                            // Share `iters` transfers among the submitters.
                            let count = iters / submitters + u64::from(s < iters % submitters);
                            tokio::spawn(async move {
                                for _ in 0..count {
                                    let n = next_id.fetch_add(1, Ordering::Relaxed);
                                    let req = TransferRequest::single(
                                        TransferId(u128::from(n)),
                                        FUNDING,
                                        shop(n),
                                        100,
                                        EUR,
                                    );
                                    ledger
                                        .submit(move |tx| tx.create_transfer(&req))
                                        .await
                                        .expect("durable transfer");
                                }
                            })
                        })
                        .collect();
                    for t in tasks {
                        t.await.expect("submitter");
                    }
                    start.elapsed()
                })
            });
        });
        let after = ledger.metrics();
        let jobs = after.jobs_committed - before.jobs_committed;
        let commits = after.batches_committed - before.batches_committed;
        eprintln!(
            "{submitters} submitters: {jobs} transfers in {commits} commits, mean batch {:.1}",
            jobs as f64 / commits.max(1) as f64,
        );
    }
    // The committer's own cost per transfer: one job of 100 transfers, so
    // neither the sync nor the hand-off between threads is per transfer.
    group.throughput(Throughput::Elements(100));
    group.bench_function("transfers_in_jobs_of_100", |b| {
        b.iter(|| {
            let first = next_id.fetch_add(100, Ordering::Relaxed);
            ledger
                .submit_blocking(move |tx| {
                    (first..first + 100).try_for_each(|n| {
                        let id = TransferId(u128::from(n));
                        let req = TransferRequest::single(id, FUNDING, shop(n), 100, EUR);
                        tx.create_transfer(&req).map(drop)
                    })
                })
                .expect("durable transfers");
        });
    });
    group.finish();
}

criterion_group!(benches, durable_transfers);
criterion_main!(benches);
