//! Leaf issuance by the local CA, as the forward proxy meets hosts: the first leaf for a
//! name (key generation and signing) and every later one (the cache).
//!
//! `cargo bench -p downtime-proxy --bench leaf_issuance`

#![allow(missing_docs, clippy::unwrap_used)]

use criterion::{Criterion, criterion_group, criterion_main};
use downtime_proxy::tls::LocalCa;

fn issuance(c: &mut Criterion) {
    let dir = std::env::temp_dir().join(format!("downtime-bench-ca-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let ca = LocalCa::open(&dir).unwrap();
    let mut n = 0u64;
    c.bench_function("leaf for a new host", |b| {
        b.iter(|| {
            n += 1;
            ca.leaf(&[format!("host-{n}.example.com")]).unwrap()
        })
    });
    let names = vec!["api.stripe.com".to_owned()];
    ca.leaf(&names).unwrap();
    c.bench_function("leaf for a known host (cached)", |b| {
        b.iter(|| ca.leaf(&names).unwrap())
    });
    let _ = std::fs::remove_dir_all(&dir);
}

criterion_group!(benches, issuance);
criterion_main!(benches);
