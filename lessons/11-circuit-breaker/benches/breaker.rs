//! What one breaker decision costs: `admit` and settling the permit, in a
//! closed breaker (the common case) and an open one (a refusal). The
//! baseline beside them is an uncontended mutex lock and unlock, the
//! floor of any shared state between a worker's tasks.

use std::hint::black_box;
use std::sync::Mutex;
use std::time::Duration;

use circuit::{Admission, Breaker, Policy};
use criterion::Criterion;

fn main() {
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime,
        Err(error) => panic!("no runtime: {error}"),
    };
    let _inside = runtime.enter();
    let mut criterion = Criterion::default()
        .measurement_time(Duration::from_secs(2))
        .configure_from_args();
    let mut group = criterion.benchmark_group("breaker");

    let floor = Mutex::new(0u64);
    group.bench_function("mutex_floor", |b| {
        b.iter(|| {
            if let Ok(mut n) = floor.lock() {
                *n += 1;
            }
        })
    });

    let closed = Breaker::new(Policy::default());
    group.bench_function("closed_admit_and_succeed", |b| {
        b.iter(|| {
            if let Admission::Call(permit) = black_box(closed.admit()) {
                permit.succeeded();
            }
        })
    });

    let open = Breaker::new(Policy {
        reset_timeout: Duration::from_secs(3600),
        ..Policy::default()
    });
    for _ in 0..10 {
        if let Admission::Call(permit) = open.admit() {
            permit.failed();
        }
    }
    group.bench_function("open_refuse", |b| b.iter(|| black_box(open.admit())));
    group.finish();
    criterion.final_summary();
}
