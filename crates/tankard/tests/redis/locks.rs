//! The distributed creation lock, seen from two managers in one test
//! process (each with its own connection, as two processes would be) and
//! from a raw client.

use std::time::{Duration, Instant};

use crate::common::{Kind, Raw, lock_key, manager, toml, unique_prefix};

both!(
    a_release_by_a_non_owner_does_not_unlock,
    a_slow_creator_keeps_its_lock,
    a_waiter_elsewhere_is_woken_by_the_release,
);

async fn a_release_by_a_non_owner_does_not_unlock(kind: Kind) {
    let prefix = unique_prefix("owner");
    let cache = manager(&toml(kind, &prefix, ""));
    let lock = lock_key(&prefix, "n", "k");
    let mut raw = Raw::connect(kind).await;

    let value = cache
        .namespace("n")
        .get_or_create("k", || {
            let (lock, mut raw) = (lock.clone(), raw.clone());
            async move {
                // Our lock expired and another process took it: the key now
                // holds that process's token.
                let ours: Option<String> = raw.query(redis::cmd("GET").arg(&lock)).await;
                assert!(ours.is_some(), "the creator runs under the lock");
                raw.query::<()>(
                    redis::cmd("SET")
                        .arg(&lock)
                        .arg("other-owner")
                        .arg("PX")
                        .arg(30_000),
                )
                .await;
                "v".to_string()
            }
        })
        .await
        .unwrap();
    assert_eq!(*value, "v");
    // Our release (already done when get_or_create returned) left theirs alone.
    let holder: Option<String> = raw.query(redis::cmd("GET").arg(&lock)).await;
    assert_eq!(holder.as_deref(), Some("other-owner"));
    raw.query::<()>(redis::cmd("DEL").arg(&lock)).await;
}

async fn a_slow_creator_keeps_its_lock(kind: Kind) {
    let prefix = unique_prefix("renew");
    let cache = manager(&toml(kind, &prefix, "lock_timeout = \"300ms\""));
    let lock = lock_key(&prefix, "n", "k");
    let raw = Raw::connect(kind).await;

    let value = cache
        .namespace("n")
        .get_or_create("k", || {
            let (lock, mut raw) = (lock.clone(), raw.clone());
            async move {
                let token: Option<String> = raw.query(redis::cmd("GET").arg(&lock)).await;
                // Over three lifetimes: only renewal keeps it.
                tokio::time::sleep(Duration::from_millis(1000)).await;
                let still: Option<String> = raw.query(redis::cmd("GET").arg(&lock)).await;
                assert!(token.is_some());
                assert_eq!(still, token, "the lock expired while its creator ran");
                let pttl = raw.pttl(&lock).await;
                assert!(pttl > 0 && pttl <= 300, "PTTL {pttl}");
                1u8
            }
        })
        .await
        .unwrap();
    assert_eq!(*value, 1);
    // Released, not left to expire.
    let mut raw = raw;
    let exists: i64 = raw.query(redis::cmd("EXISTS").arg(&lock)).await;
    assert_eq!(exists, 0);
}

async fn a_waiter_elsewhere_is_woken_by_the_release(kind: Kind) {
    // A long fallback poll would show up as a late wake-up; the value must
    // come from the holder, and the waiter's creator must never run.
    let config = toml(kind, &unique_prefix("wake"), "");
    let (holder, waiter) = (manager(&config), manager(&config));
    let (started_tx, started_rx) = tokio::sync::oneshot::channel();
    let (finish_tx, finish_rx) = tokio::sync::oneshot::channel::<()>();

    let holding = tokio::spawn({
        let ns = holder.namespace("n");
        async move {
            ns.get_or_create("k", || async move {
                started_tx.send(()).unwrap();
                finish_rx.await.unwrap();
                "holder".to_string()
            })
            .await
            .unwrap()
        }
    });
    started_rx.await.unwrap();
    let waiting = tokio::spawn({
        let ns = waiter.namespace("n");
        async move {
            let value = ns
                .get_or_create("k", || async { "waiter".to_string() })
                .await
                .unwrap();
            (value, Instant::now())
        }
    });
    // Until the waiter blocks on the lock (counted as a lock wait).
    let deadline = Instant::now() + Duration::from_secs(10);
    while waiter.default_region().stats().lock_waits == 0 {
        assert!(Instant::now() < deadline, "the waiter never waited");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    tokio::time::sleep(Duration::from_millis(20)).await;
    let released = Instant::now();
    finish_tx.send(()).unwrap();
    assert_eq!(*holding.await.unwrap(), "holder");
    let (value, woken) = waiting.await.unwrap();
    assert_eq!(*value, "holder");
    assert_eq!(waiter.default_region().stats().creator_calls, 0);
    eprintln!(
        "{kind:?}: waiter in another manager got the value {:?} after the holder finished",
        woken.duration_since(released)
    );
}
